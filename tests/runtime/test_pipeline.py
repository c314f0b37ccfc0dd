"""The schedule run in one process (``launcher="threads"``): exactness against HF ``generate()``
over 1, 2 and 3 stages, quantized plans, sampling, budgets. The same stage code runs under
torchrun in test_distributed.py."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import generated, id_prompts, make_plan

from llmpq.errors import UserError
from llmpq.runtime import Prompt, serve
from llmpq.runtime.prompts import generation_ids

pytestmark = pytest.mark.usefixtures("one_thread")

# stages -> (layer splits of a 4-layer model, (prefill_size, decode_size, decode_count))
LAYOUTS = {
    1: ([(0, 4)], (3, 3, 1)),
    2: ([(0, 2), (2, 4)], (2, 2, 2)),  # prefill [0,1] [2]; decode [0,1] [2]
    3: ([(0, 1), (1, 3), (3, 4)], (2, 1, 3)),  # decode regroups across prefill micro-batches
}


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("family", ["opt", "bloom", "llama-gqa"])
def test_16bit_plan_matches_hf_generate(tiny_families, family, stages, tmp_path):
    tiny, hf_tokens = tiny_families[family]
    splits, mb = LAYOUTS[stages]
    plan = make_plan(tiny.path, splits, mb)
    result = serve(plan, tiny.path, id_prompts(tiny.ids, tiny.mask), tmp_path, launcher="threads")
    eos_ids, _ = generation_ids(tiny.path)
    want = generated(hf_tokens, tiny.ids.shape[1], eos_ids)
    assert [list(o.token_ids) for o in result.outputs] == want
    assert result.metrics.num_stages == stages


@pytest.fixture(scope="module")
def default_prompts(tiny_default):
    return [Prompt("a", "def main():"), Prompt("b", "The module"), Prompt("c", "import")]


def _hf_generate(model_dir, prompts, gen_len):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    enc = tok([p.text for p in prompts], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=gen_len, do_sample=False)
    return generated(out, enc.input_ids.shape[1], generation_ids(model_dir)[0])


def test_default_recipe_model_over_1_2_3_stages(tiny_default, default_prompts, tmp_path):
    want = _hf_generate(tiny_default, default_prompts, 8)
    for splits, mb in ([(0, 2)], (3, 3, 1)), ([(0, 1), (1, 2)], (1, 2, 2)), (
        [(0, 1), (1, 1), (1, 2)], (2, 1, 3)):  # fmt: skip
        plan = make_plan(tiny_default, splits, mb)
        result = serve(plan, tiny_default, default_prompts, tmp_path, launcher="threads")
        assert [list(o.token_ids) for o in result.outputs] == want, splits
    lines = (tmp_path / "outputs.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]
    assert json.loads(lines[0])["text"]


def test_quantized_plan_from_a_file_matches_the_stage_chain(tiny_families, tmp_path):
    from llmpq.models.stage import StageRange, generate_greedy
    from llmpq.quant import quantize_model
    from llmpq.quant.apply import load_quantized_stage
    from llmpq.quant.state import QuantizedModel

    tiny, _ = tiny_families["llama-gqa"]
    bits = [4, 8, 3, 16]
    qfile = tmp_path / "q.safetensors"
    quantize_model(tiny.path, bits, group_size=32).save(qfile)
    plan = make_plan(tiny.path, [(0, 2), (2, 4)], (2, 2, 2), bits=bits)
    prompts = id_prompts(tiny.ids, tiny.mask)
    result = serve(plan, tiny.path, prompts, tmp_path, launcher="threads", quantized=qfile,
                   ignore_eos=True)  # fmt: skip
    qmodel = QuantizedModel.load(qfile)
    stages = [load_quantized_stage(tiny.path, StageRange.of(s, e, 4), qmodel) for s, e in
              [(0, 2), (2, 4)]]  # fmt: skip
    want = generate_greedy(stages, tiny.ids, tiny.mask, 8)[:, tiny.ids.shape[1] :]
    assert [list(o.token_ids) for o in result.outputs] == want.tolist()
    # on-the-fly RTN of the same plan runs too
    again = serve(plan, tiny.path, prompts, tmp_path, launcher="threads", group_size=32)
    assert all(len(o.token_ids) >= 1 for o in again.outputs)


def test_sampling_is_reproducible_and_partition_free(tiny_default, default_prompts, tmp_path):
    def run(splits, mb, seed):
        plan = make_plan(tiny_default, splits, mb, gen_len=6)
        r = serve(plan, tiny_default, default_prompts, tmp_path, launcher="threads",
                  temperature=1.0, top_p=0.9, seed=seed, ignore_eos=True)  # fmt: skip
        return [o.token_ids for o in r.outputs]

    one = run([(0, 2)], (3, 3, 1), seed=5)
    assert one == run([(0, 2)], (3, 3, 1), seed=5)
    assert one == run([(0, 1), (1, 2)], (1, 1, 3), seed=5)
    assert one != run([(0, 2)], (3, 3, 1), seed=6)


def test_over_budget_names_stage_need_and_budget(tiny_default, default_prompts, tmp_path):
    from llmpq.cluster import Cluster

    cluster = Cluster.from_dict({"name": "tight", "devices": [
        {"name": "cpu-0", "type": "cpu", "memory_MiB": 64},
        {"name": "cpu-1", "type": "cpu", "memory_MiB": 0.25}]})  # fmt: skip
    plan = make_plan(tiny_default, [(0, 1), (1, 2)], (3, 3, 1))
    with pytest.raises(UserError) as err:
        serve(plan, tiny_default, default_prompts, tmp_path, cluster=cluster, launcher="threads")
    message = str(err.value)
    assert "stage 1 (cpu-1" in message and "needs" in message and "budget of 0.2 MiB" in message
    assert not (tmp_path / "outputs.jsonl").exists()
