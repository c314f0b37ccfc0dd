"""``serve_dataset`` / ``llmpq serve --prompts``: a whole file of requests, outputs streamed,
a killed run resumed with nothing lost or duplicated, bad input refused before anything runs."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch
import yaml
from conftest import FAIL_WITHIN_s, HANG_DETECT_s, assert_hf_up_to_ties, generated, make_plan

from llmpq.cli import main
from llmpq.plan import save_plan
from llmpq.runtime import ServeFailed, serve_dataset
from llmpq.runtime.job import Fault
from llmpq.runtime.prompts import generation_ids


def _prompts(path, count: int, seed: int = 0, limit=(2, 12)) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        n = int(torch.randint(1, 14, (1,), generator=g))
        ids = torch.randint(3, 500, (n,), generator=g).tolist()
        rows.append({"id": f"p{i}", "token_ids": ids,
                     "max_new_tokens": int(torch.randint(*limit, (1,), generator=g))})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _hf(model_dir, rows) -> dict[str, list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    eos = generation_ids(model_dir)[0]
    out = {}
    for r in rows:
        gen = model.generate(torch.tensor([r["token_ids"]]), max_new_tokens=r["max_new_tokens"],
                             do_sample=False, pad_token_id=1)  # fmt: skip
        row = gen[0, len(r["token_ids"]) :].tolist()
        ends = [i for i, t in enumerate(row) if t in eos]
        out[r["id"]] = row[: ends[0] + 1] if ends else row
    return out


def _ids(rows) -> dict[str, list[int]]:
    return {r["id"]: r["token_ids"] for r in rows}


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_threads_serve_every_request_then_refuse_and_resume(tiny_default, tmp_path):
    rows = _prompts(tmp_path / "p.jsonl", 20)
    plan = make_plan(tiny_default, [(0, 1), (1, 2)], (2, 2, 2), gen_len=8)
    out = tmp_path / "out"
    result = serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", out, launcher="threads",
                           progress=False)  # fmt: skip
    got = {r["id"]: r for r in _lines(out / "outputs.jsonl")}
    assert sorted(got) == sorted(r["id"] for r in rows)
    want = _hf(tiny_default, rows)
    assert_hf_up_to_ties(
        tiny_default, _ids(rows), {k: v["token_ids"] for k, v in got.items()}, want
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["prompts"] == 20 and m["generated_tokens"] == sum(
        len(v["token_ids"]) for v in got.values()
    )
    assert m["concurrency"] == 4 and m["refill"] is True and m["tokens_per_s"] > 0
    assert m["prompt_lens"]["max"] == max(len(r["token_ids"]) for r in rows)
    assert result.metrics.prompts == 20 and not list(out.glob(".serve-*"))
    with pytest.raises(Exception, match="already holds outputs.jsonl; pass --resume"):
        serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", out, launcher="threads")
    again = serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", out, launcher="threads",
                          resume=True, progress=False)  # fmt: skip
    assert again.metrics is None and again.skipped == 20  # nothing left
    one = serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", tmp_path / "one",
                        launcher="threads", refill=False, progress=False)  # fmt: skip
    assert one.metrics.refill is False
    assert_hf_up_to_ties(tiny_default, _ids(rows), {r["id"]: r["token_ids"] for r in
                          _lines(tmp_path / "one" / "outputs.jsonl")}, want)  # fmt: skip


@pytest.mark.slow
def test_a_killed_stage_keeps_finished_lines_and_resume_completes(tiny_default, tmp_path):
    rows = _prompts(tmp_path / "p.jsonl", 40, limit=(4, 16))
    plan = make_plan(tiny_default, [(0, 1), (1, 2)], (1, 2, 2), gen_len=8)
    out = tmp_path / "out"
    start = time.monotonic()
    with pytest.raises(ServeFailed, match=r"stage 1 \(cpu-1, layers \[1, 2\)\) died or hung"):
        serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", out, stage_timeout_s=HANG_DETECT_s,
                      fault=Fault(stage=1, action="kill", after_sends=120), progress=False)  # fmt: skip
    assert time.monotonic() - start < FAIL_WITHIN_s
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert left.stdout == ""  # no stage outlives the run
    first = _lines(out / "outputs.jsonl")  # every line whole
    assert 0 < len(first) < 40 and not (out / "metrics.json").exists()
    for job in out.glob(".serve-*"):  # the failed run's folder (with its log) may go
        subprocess.run(["rm", "-rf", str(job)], check=True)
    result = serve_dataset(plan, tiny_default, tmp_path / "p.jsonl", out, resume=True,
                           progress=False)  # fmt: skip
    assert result.skipped == len(first) and result.metrics.prompts == 40 - len(first)
    final = _lines(out / "outputs.jsonl")
    ids = [r["id"] for r in final]
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids))
    assert final[: len(first)] == first  # the finished lines were kept, not served again
    eos = generation_ids(tiny_default)[0]
    limits = {r["id"]: r["max_new_tokens"] for r in rows}
    for r in final:  # each ended at its first end-of-sequence or at its own limit
        t = r["token_ids"]
        assert 0 < len(t) <= limits[r["id"]] and not any(x in eos for x in t[:-1])
        assert r["finish_reason"] == ("stop" if t[-1] in eos else "length")


@pytest.mark.slow
def test_cli_openai_batch_in_and_out_and_bad_lines(tiny_default, tmp_path, capsys):
    from transformers import AutoTokenizer

    plan = make_plan(tiny_default, [(0, 2)], (2, 2, 1), batch_size=2, gen_len=4)
    save_plan(plan, tmp_path / "plan.json")
    devices = [{"name": "cpu-0", "type": "cpu", "memory_MiB": 256, "cores": 1}]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"name": "t", "devices": devices}))
    lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": tiny_default.name, "prompt": f"def f{i}(x):", "max_tokens": 3}}
             for i in range(5)]  # fmt: skip
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    args = ["serve", "--plan", str(tmp_path / "plan.json"), "--model", str(tiny_default),
            "--cluster", str(tmp_path / "c.yaml"), "--no-progress"]  # fmt: skip
    assert main([*args, "--prompts", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "o")]) == 0
    assert "served 5 prompts" in capsys.readouterr().out
    got = _lines(tmp_path / "o" / "outputs.jsonl")
    assert sorted(r["custom_id"] for r in got) == [f"q{i}" for i in range(5)]
    tok = AutoTokenizer.from_pretrained(tiny_default)
    for r in got:
        body = r["response"]["body"]
        assert body["object"] == "text_completion" and body["usage"]["completion_tokens"] <= 3
        assert body["usage"]["prompt_tokens"] == len(tok(f"def f{r['custom_id'][1:]}(x):")[
            "input_ids"])  # fmt: skip
    lines[3]["custom_id"] = "q1"
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert (
        main([*args, "--prompts", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "n")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "bad.jsonl line 4: id = 'q1' repeats line 2's" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "n" / "outputs.jsonl").exists() and not list(
        (tmp_path / "n").glob(".serve-*"))  # fmt: skip


@pytest.mark.slow
def test_dist_ring_carries_the_dataset_schedule(tiny_families, tmp_path):
    """torch.distributed frames (uniform size, control words inside) give HF's tokens too."""
    tiny, hf_tokens = tiny_families["llama-gqa"]
    want = generated(hf_tokens, tiny.ids.shape[1], generation_ids(tiny.path)[0])
    rows = [{"id": str(i), "token_ids": row[m.bool()].tolist(), "max_new_tokens": 8}
            for i, (row, m) in enumerate(zip(tiny.ids, tiny.mask, strict=True))]  # fmt: skip
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = make_plan(tiny.path, [(0, 3), (3, 4)], (3, 3, 1))
    serve_dataset(plan, tiny.path, tmp_path / "p.jsonl", tmp_path / "o", ring="dist",
                  progress=False)  # fmt: skip
    got = {r["id"]: r["token_ids"] for r in _lines(tmp_path / "o" / "outputs.jsonl")}
    assert [got[str(i)] for i in range(3)] == want
