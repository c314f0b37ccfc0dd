"""The runtime for real: one process per stage under torchrun (gloo), through the library and the
CLI; stages that die or hang; exit codes. Each launch costs seconds (process start, imports),
so each test checks several things per launch."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml
from conftest import (
    FAIL_WITHIN_s,
    HANG_DETECT_s,
    assert_hf_up_to_ties,
    generated,
    id_prompts,
    make_plan,
)
from test_pipeline import _hf_generate
from transformers import AutoTokenizer

from llmpq.cli import main
from llmpq.plan import save_plan
from llmpq.runtime import Prompt, ServeFailed, serve
from llmpq.runtime.job import Fault
from llmpq.runtime.prompts import generation_ids

PROMPTS = [Prompt("short", "x"), Prompt("long", "def main(argv):\n    return"),
           Prompt("mid", "The os module")]  # fmt: skip


def _write_inputs(tmp_path, model_dir, splits, mb, memory_MiB=256):
    plan = make_plan(model_dir, splits, mb)
    save_plan(plan, tmp_path / "plan.json")
    devices = [{"name": s.device, "type": "cpu", "memory_MiB": memory_MiB, "cores": 1}
               for s in plan.stages]  # fmt: skip
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"name": "t", "devices": devices}))
    lines = [json.dumps({"id": p.id, "prompt": p.text}) for p in PROMPTS]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return ["--plan", str(tmp_path / "plan.json"), "--model", str(model_dir),
            "--cluster", str(tmp_path / "cluster.yaml")]  # fmt: skip


@pytest.mark.slow
def test_cli_three_stages_match_hf_generate(tiny_default, tmp_path, capsys):
    args = _write_inputs(tmp_path, tiny_default, [(0, 1), (1, 1), (1, 2)], (2, 1, 3))
    out = tmp_path / "out"
    assert main(["serve", *args, "--prompts", str(tmp_path / "prompts.jsonl"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert "tokens/s" in capsys.readouterr().out
    rows = {r["id"]: r for r in map(json.loads, (out / "outputs.jsonl").read_text().splitlines())}
    assert sorted(rows) == sorted(p.id for p in PROMPTS)  # in the order they finished
    want = _hf_generate(tiny_default, PROMPTS, 8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_default)
    ids = {p.id: tokenizer(p.text)["input_ids"] for p in PROMPTS}
    assert_hf_up_to_ties(tiny_default, ids, {p.id: rows[p.id]["token_ids"] for p in PROMPTS},
                         {p.id: w for p, w in zip(PROMPTS, want, strict=True)})  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["launcher"] == "torchrun" and metrics["num_stages"] == 3
    assert metrics["prompts"] == 3 and metrics["generated_tokens"] == sum(map(len, want))
    for name in ("makespan_s", "tokens_per_s", "wall_s"):
        assert metrics[name] > 0
    assert [s["threads"] for s in metrics["stages"]] == [1, 1, 1]
    assert all(s["busy_s"] > 0 and s["peak_memory_bytes"] > 0 for s in metrics["stages"])
    for s in metrics["stages"]:  # busy split by phase: prefill passes (+ regrouping), decode
        assert s["prefill_busy_s"] > 0 and s["decode_busy_s"] > 0
        assert s["prefill_busy_s"] + s["decode_busy_s"] == pytest.approx(s["busy_s"])
    assert not list(out.glob(".serve-*"))  # the job folder is gone after success
    # bad input: one line, exit 2, before any process starts
    assert main(["serve", *args, "--prompts", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2
    assert "prompts file" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("ring", ["sockets", "dist"])  # one host's CPU stages: auto = sockets
def test_two_stage_llama_gqa_matches_hf_over_either_ring(tiny_families, tmp_path, ring):
    tiny, hf_tokens = tiny_families["llama-gqa"]
    plan = make_plan(tiny.path, [(0, 3), (3, 4)], (2, 2, 2))
    result = serve(plan, tiny.path, id_prompts(tiny.ids, tiny.mask), tmp_path, ring=ring)
    want = generated(hf_tokens, tiny.ids.shape[1], generation_ids(tiny.path)[0])
    assert [list(o.token_ids) for o in result.outputs] == want
    assert result.metrics.stages[1]["layers"] == [3, 4]


@pytest.mark.slow
@pytest.mark.parametrize(("action", "ring"), [("kill", "auto"), ("hang", "auto"), ("kill", "dist")])
def test_a_stage_that_dies_or_hangs_fails_the_run_naming_it(tiny_default, tmp_path, action, ring):
    plan = make_plan(tiny_default, [(0, 1), (1, 2)], (1, 1, 3), gen_len=16)
    start = time.monotonic()
    with pytest.raises(ServeFailed, match=r"stage 1 \(cpu-1, layers \[1, 2\)\) died or hung"):
        serve(plan, tiny_default, PROMPTS, tmp_path, stage_timeout_s=HANG_DETECT_s, ring=ring,
              fault=Fault(stage=1, action=action, after_sends=4))  # fmt: skip
    assert time.monotonic() - start < FAIL_WITHIN_s
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == ""  # no stage outlives the run (a stopped one included)
    assert not (tmp_path / "outputs.jsonl").exists() and not (tmp_path / "metrics.json").exists()


def test_cli_exit_codes(tiny_default, tmp_path, monkeypatch, capsys):
    args = _write_inputs(tmp_path, tiny_default, [(0, 1), (1, 2)], (3, 3, 1), memory_MiB=0.25)
    prompts = ["--prompts", str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "o")]
    assert main(["serve", *args, *prompts]) == 2  # over budget
    err = capsys.readouterr().err
    assert "stage 0 (cpu-0" in err and "does not fit its budget of 0.2 MiB" in err
    assert len(err.strip().splitlines()) == 1

    def fail(*a, **k):
        raise ServeFailed("stage 1 (cpu-1, layers [1, 2)) died or hung")

    monkeypatch.setattr("llmpq.runtime.serve_dataset", fail)
    assert main(["serve", *args, *prompts]) == 1
    assert "stage 1 (cpu-1" in capsys.readouterr().err


@pytest.mark.slow
def test_default_model_two_stages_match_hf_generate(default_model, tmp_path):
    plan = make_plan(default_model, [(0, 3), (3, 6)], (2, 2, 2), gen_len=16)
    result = serve(plan, default_model, PROMPTS, tmp_path, gen_len=16)
    assert [list(o.token_ids) for o in result.outputs] == _hf_generate(default_model, PROMPTS, 16)
