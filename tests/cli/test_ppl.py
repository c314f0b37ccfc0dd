"""``llmpq ppl``: JSON result for uniform bits and for a plan; one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpq.cli import main
from llmpq.models.spec import model_spec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tiny_default: Path) -> Path:
    return tiny_default


def _plan(model_dir: Path, path: Path, bits: list[list[int]]) -> Path:
    """A hand-written plan (schema_version 1) with one stage per entry of ``bits``."""
    stages, start = [], 0
    for i, stage_bits in enumerate(bits):
        end = start + len(stage_bits)
        stages.append({"device": f"cpu-{i}", "device_type": "cpu", "layers": [start, end],
                       "bits": stage_bits})  # fmt: skip
        start = end
    shape = model_spec(model_dir).to_dict() | {"num_layers": start}
    plan = {
        "schema_version": 1,
        "model": {"id": "tiny", "shape": shape},
        "workload": {"batch_size": 1, "prompt_len": 8, "gen_len": 4},
        "method": "uniform",
        "stages": stages,
        "micro_batch": {"prefill_size": 1, "decode_size": 1, "decode_count": 1},
    }
    path.write_text(json.dumps(plan))
    return path


def test_uniform_bits_write_the_result(capsys, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "res" / "ppl.json"
    code = main(["ppl", "--model", str(model_dir), "--bits", "4", "--out", str(out)])
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert code == 0 and stdout.count("\n") == 1 and "perplexity" in stdout
    assert result["bits_per_layer"] == [4, 4] and result["method"] == "rtn"
    assert result["group_size"] == 128 and result["tokens_evaluated"] > 1000
    assert result["perplexity"] > 1 and result["seconds"] >= result["eval_seconds"]


def test_a_plan_gives_bits_and_stages(capsys, model_dir: Path, tmp_path: Path) -> None:
    plan = _plan(model_dir, tmp_path / "plan.json", [[8], [3]])
    out, saved = tmp_path / "ppl.json", tmp_path / "q.safetensors"
    argv = ["ppl", "--model", str(model_dir), "--plan", str(plan), "--method", "gptq",
            "--group-size", "64", "--save-quantized", str(saved), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["bits_per_layer"] == [8, 3] and result["stage_layers"] == [[0, 1], [1, 2]]
    assert result["method"] == "gptq" and result["group_size"] == 64 and saved.is_file()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--bits", "5"], "bits = 5"),
        (["--bits", "4", "--group-size", "48"], "group_size = 48"),
        (["--bits", "4", "--method", "awq"], "method = 'awq'"),
        (["--bits", "4", "--text", "SHORT"], "too short to evaluate"),
        (["--plan", "PLAN3"], "has 3 layers' bits"),
        (["--plan", "MISSING"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys, model_dir: Path, tmp_path: Path, extra: list[str], needle: str
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Hi.")
    plan3 = _plan(model_dir, tmp_path / "plan3.json", [[4, 4], [4]])
    names = {"SHORT": str(short), "PLAN3": str(plan3), "MISSING": str(tmp_path / "none.json")}
    extra = [names.get(a, a) for a in extra]
    out = tmp_path / "ppl.json"
    code = main(["ppl", "--model", str(model_dir), *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
