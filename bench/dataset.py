"""A whole dataset on this CPU: continuous batching vs one batch at a time vs HF static batches.

Run (on a quiet machine; about 25 minutes for 300 prompts on 2 cores)::

    python bench/dataset.py --model results/models/smollm2-135m \
        --costs-hetero results/costs --costs-single results/costs-2threads \
        --indicator results/indicator/smollm2-135m.nc [--prompts config/prompts/example_openai.jsonl]
        [--count 300] [--clusters cpu_hetero_smollm2,cpu_single] [--theta 1 | --ppl-increase-pct 20]
        [--json PATH]

For each cluster, in this one process: ``plan_dataset`` plans for the prompts file (the
planner chooses the concurrency), then the same plan, model, prompts, limits and cores serve

(a) **continuous**: ``serve_dataset`` (slots refilled as sequences end, length-grouped admits);
(b) **one batch at a time** (the paper's mode): ``serve_dataset(refill=False)``, the plan's
    concurrency of requests per batch, the next batch once the ring has drained;
(c) **HF static**: HF ``generate()`` on the same weights (the plan's 3/4/8-bit layers swapped
    in with llmpq's quantized linears, 16-bit layers as HF's bf16), batches of the plan's
    concurrency of requests sorted by prompt length — what a careful user writes by hand — each
    batch generating up to its largest limit, every row cut at its own limit and first
    end-of-sequence; ``torch.set_num_threads`` = the cores the cluster's workers have together.

End-of-sequence ends a sequence in every mode. Generated tokens/s = the requests' generated
tokens (each up to its end-of-sequence or limit) over the makespan (serve: first stage, from
all stages loaded to the last output written; HF: the loop of ``generate`` calls, after a
warm-up call). Predictions: the plan's (every request runs to its limit: an upper bound), and
the simulator replaying the run's measured output lengths (``simulate_dataset(...,
output_lens=...)``): ``measured_over_predicted`` is the measured makespan over the replay.
Cost tables: each cluster's prediction needs a table profiled at its workers' threads
(``--costs-hetero``: 1 thread per worker; ``--costs-single``: the whole machine's).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from llmpq.cluster import load_cluster
from llmpq.dataset_workload import DatasetWorkload
from llmpq.files import write_json_atomic
from llmpq.indicator import load_indicator
from llmpq.planner import SolverOptions, planning_problem
from llmpq.planner.dataset import plan_dataset
from llmpq.runtime import serve_dataset
from llmpq.runtime.dataset import max_positions
from llmpq.runtime.prompts import generation_ids
from llmpq.runtime.requests import RequestLimits, iter_requests, prepare_requests
from llmpq.simulator import simulate_dataset


def load_requests(prompts: Path, count: int, model_dir: Path, tmp: Path):
    """The first ``count`` lines of ``prompts``, tokenized as ``serve`` does."""
    from transformers import AutoTokenizer

    from llmpq.models.checkpoint import Checkpoint

    lines = prompts.read_text().splitlines()[:count]
    cut = tmp / "prompts.jsonl"
    cut.write_text("\n".join(lines) + "\n")
    tok = AutoTokenizer.from_pretrained(model_dir)
    limits = RequestLimits(max_positions(Checkpoint(model_dir).config_dict()), 64)
    summary = prepare_requests(cut, tok, limits, tmp / "tokenized.jsonl")
    return cut, list(iter_requests(summary.path)), tok


def hf_static(model_dir: Path, plan, requests, threads: int) -> dict:
    """HF generate() in static batches of the plan's concurrency, sorted by prompt length."""
    from transformers import AutoModelForCausalLM

    from llmpq.models.stage import StageRange, stage_from_model
    from llmpq.quant.apply import quantize_stage

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    bits = plan.bits_per_layer()
    if any(b != 16 for b in bits):  # the plan's bits, with llmpq's quantized linears
        quantize_stage(stage_from_model(model, StageRange.of(0, len(bits), len(bits))), bits)
    eos_ids, pad = generation_ids(model_dir)
    size = plan.micro_batch.decode_size * plan.micro_batch.decode_count
    order = sorted(requests, key=lambda r: len(r.token_ids))
    batches = [order[i : i + size] for i in range(0, len(order), size)]

    def run(batch) -> list[int]:
        T = max(len(r.token_ids) for r in batch)
        ids = torch.full((len(batch), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, T - len(r.token_ids) :] = torch.tensor(r.token_ids)
            mask[i, T - len(r.token_ids) :] = 1
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max(r.max_new_tokens for r in batch),
                                 eos_token_id=list(eos_ids), pad_token_id=pad)  # fmt: skip
        lens = []
        for r, row in zip(batch, out[:, T:].tolist(), strict=True):
            row = row[: r.max_new_tokens]
            ends = [i for i, t in enumerate(row) if t in eos_ids]
            lens.append(ends[0] + 1 if ends else len(row))
        return lens

    run(batches[0][:1])  # warm-up
    start = time.perf_counter()
    generated = sum(sum(run(b)) for b in batches)
    seconds = time.perf_counter() - start
    return {"makespan_s": seconds, "generated_tokens": generated,
            "tokens_per_s": generated / seconds, "batches": len(batches), "batch_size": size}  # fmt: skip


def output_lens(out_dir: Path, requests) -> np.ndarray:
    made = {}
    for line in (out_dir / "outputs.jsonl").read_text().splitlines():
        row = json.loads(line)
        key = row.get("custom_id", row.get("id"))
        made[key] = row["response"]["body"]["usage"]["completion_tokens"] if "response" in row \
            else len(row["token_ids"])  # fmt: skip
    return np.array([made[r.id] for r in requests])


def bench_cluster(args, name: str, costs: str, cut: Path, requests, tmp: Path) -> dict:
    cluster = load_cluster(f"config/clusters/{name}.yaml")
    threads = sum(d.cores or (os.cpu_count() or 1) for d in cluster.devices)
    dataset = DatasetWorkload.of(cut.name, [len(r.token_ids) for r in requests],
                                 [r.max_new_tokens for r in requests])  # fmt: skip
    target = ({"ppl_increase_pct": args.ppl_increase_pct} if args.ppl_increase_pct is not None
              else {"theta": args.theta})  # fmt: skip
    problem = planning_problem(args.model, cluster, dataset.time_shape(1), costs_dir=costs,
                               indicator=load_indicator(args.indicator), **target)  # fmt: skip
    t0 = time.perf_counter()
    plan = plan_dataset(problem, dataset, "llmpq", SolverOptions(time_limit_s=10))
    plan_s = time.perf_counter() - t0
    print(f"[{name}] plan: {plan.dataset.concurrency} in flight, micro-batches "
          f"{plan.micro_batch}, bits {sorted(set(plan.bits_per_layer()))}, {plan_s:.1f} s; "
          f"predicted {plan.dataset.predicted['tokens_per_s']:.1f} tok/s", flush=True)  # fmt: skip
    runs = {}
    for mode, refill in (("continuous", True), ("one_batch", False)):
        out = tmp / f"{name}-{mode}"
        r = serve_dataset(plan, args.model, cut, out, cluster=cluster, refill=refill,
                          progress=False, stage_timeout_s=120)  # fmt: skip
        m = r.metrics
        lens = output_lens(out, requests)
        sub = replace(problem, workload=plan.workload, memory_workload=plan.memory_workload)
        replay = simulate_dataset(plan, sub, dataset, refill=refill, output_lens=lens)
        runs[mode] = {"makespan_s": m.makespan_s, "tokens_per_s": m.tokens_per_s,
                      "generated_tokens": m.generated_tokens, "prompts": m.prompts,
                      "replay_makespan_s": replay.makespan_s,
                      "measured_over_predicted": m.makespan_s / replay.makespan_s,
                      "busy_fraction": [s["busy_fraction"] for s in m.stages]}  # fmt: skip
        print(
            f"[{name}] {mode}: {m.tokens_per_s:.1f} tok/s, {m.generated_tokens} tokens in "
            f"{m.makespan_s:.1f} s (replayed prediction {replay.makespan_s:.1f} s)",
            flush=True,
        )
    runs["hf_static"] = hf_static(args.model, plan, requests, threads)
    print(f"[{name}] hf static: {runs['hf_static']['tokens_per_s']:.1f} tok/s, "
          f"{runs['hf_static']['generated_tokens']} tokens", flush=True)  # fmt: skip
    torch.set_num_threads(os.cpu_count() or 1)
    c, b, h = runs["continuous"], runs["one_batch"], runs["hf_static"]
    return {
        "cluster": name, "concurrency": plan.dataset.concurrency,
        "micro_batch": [plan.micro_batch.prefill_size, plan.micro_batch.decode_size,
                        plan.micro_batch.decode_count],
        "bits": sorted(set(plan.bits_per_layer())), "plan_s": plan_s,
        "candidates": plan.dataset.candidates,
        "predicted_at_limits": plan.dataset.predicted, "runs": runs,
        "continuous_vs_one_batch": c["tokens_per_s"] / b["tokens_per_s"],
        "continuous_vs_hf_static": c["tokens_per_s"] / h["tokens_per_s"],
        "measured_over_predicted": c["measured_over_predicted"],
        "prompts": c["prompts"], "generated_tokens": c["generated_tokens"],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--costs-hetero", required=True, help="cost tables profiled at 1 thread")
    p.add_argument("--costs-single", required=True, help="cost tables at the machine's threads")
    p.add_argument("--indicator", required=True)
    p.add_argument("--prompts", type=Path, default=Path("config/prompts/example_openai.jsonl"))
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--clusters", default="cpu_hetero_smollm2,cpu_single")
    p.add_argument("--theta", type=float, default=1.0)
    p.add_argument(
        "--ppl-increase-pct",
        type=float,
        help="plan under this perplexity target instead (a calibrated --indicator)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cut, requests, _ = load_requests(args.prompts, args.count, args.model, tmp)
        lens = np.array([len(r.token_ids) for r in requests])
        print(f"{len(requests)} prompts, {lens.min()}-{lens.max()} tokens (mean {lens.mean():.0f})"
              f", limits {np.mean([r.max_new_tokens for r in requests]):.0f} on average; load "
              f"{load[0]:.2f}", flush=True)  # fmt: skip
        results = []
        for name in args.clusters.split(","):
            costs = args.costs_single if name == "cpu_single" else args.costs_hetero
            results.append(bench_cluster(args, name, costs, cut, requests, tmp))
    print("\n| cluster | in flight | continuous tok/s | one batch tok/s | HF static tok/s | "
          "cont/one | cont/HF | measured/replayed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        runs = r["runs"]
        print(f"| {r['cluster']} | {r['concurrency']} | {runs['continuous']['tokens_per_s']:.1f} "
              f"| {runs['one_batch']['tokens_per_s']:.1f} | {runs['hf_static']['tokens_per_s']:.1f}"
              f" | {r['continuous_vs_one_batch']:.2f} | {r['continuous_vs_hf_static']:.2f} | "
              f"{r['measured_over_predicted']:.2f} |")  # fmt: skip
    after = os.getloadavg()
    print(f"load average before {load[0]:.2f}, after {after[0]:.2f}")
    if args.json:
        first = results[0]
        write_json_atomic(args.json, {
            "continuous_vs_one_batch": first["continuous_vs_one_batch"],
            "continuous_vs_hf_static": first["continuous_vs_hf_static"],
            "measured_over_predicted": first["measured_over_predicted"],
            "prompts": first["prompts"], "generated_tokens": first["generated_tokens"],
            "clusters": results, "load_average": [load[0], after[0]],
        })  # fmt: skip


if __name__ == "__main__":
    main()
