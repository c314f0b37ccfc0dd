import pytest

from llmpq.errors import UserError
from llmpq.workload import Workload, load_workload, save_workload


def test_load_and_round_trip(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("batch_size: 32\nprompt_len: 512\ngen_len: 100\n")
    w = load_workload(path)
    assert w == Workload(32, 512, 100, name="w")
    assert w.generated_tokens == 3200 and w.max_context_len == 612
    save_workload(w, tmp_path / "copy.yaml")
    assert load_workload(tmp_path / "copy.yaml") == w


@pytest.mark.parametrize(
    "text, field",
    [
        ("batch_size: 0\nprompt_len: 8\ngen_len: 8", "batch_size"),
        ("batch_size: 4\nprompt_len: -8\ngen_len: 8", "prompt_len"),
        ("batch_size: 4\nprompt_len: 8\ngen_len: 2.5", "gen_len"),
        ("batch_size: '4'\nprompt_len: 8\ngen_len: 8", "batch_size"),
        ("batch_size: true\nprompt_len: 8\ngen_len: 8", "batch_size"),
        ("prompt_len: 8\ngen_len: 8", "batch_size"),
        ("batch_size: 4\nprompt_len: 8\ngen_len: 8\nbatch: 3", "batch"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_workload(path)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("batch_size: 4\nprompt_len: [8\n")
    with pytest.raises(UserError, match="line"):
        load_workload(path)


def test_the_shipped_example_dataset_is_the_generators_output():
    """config/prompts/example_openai.jsonl has one writer: llmpq.example_prompts."""
    import json
    from pathlib import Path

    from llmpq.example_prompts import example_requests

    path = Path(__file__).resolve().parents[1] / "config/prompts/example_openai.jsonl"
    shipped = [json.loads(x) for x in path.read_text().splitlines()]
    assert shipped == example_requests(len(shipped)) and len(shipped) == 300
    lengths = {len(r["body"]["messages"][0]["content"]) for r in shipped}
    assert min(lengths) < 150 < 400 < max(lengths)  # varied lengths
    assert {r["body"]["max_tokens"] for r in shipped} == {16, 32, 48, 64}
