"""The serving runtime on this CPU: against HF ``generate()``, two stages against one, decode
against the memory-bandwidth roofline; then the heterogeneous CPU cluster (planner's section).

Run::

    python bench/runtime.py [--json results/bench/runtime.json] [--layers 20] [--batch 4]
        [--prompt-len 32] [--gen-len 16] [--decode-gen-len 24] [--threads N] [--skip-hetero]
        [--hetero-repeats 3]
    python bench/runtime.py --model results/models/smollm2-135m \
        --cluster config/clusters/cpu_hetero_smollm2.yaml        # the shipped real model

One ~300M-parameter random-init LLaMA-style model (hidden 1024, ``--layers`` layers, vocab
32000, bf16 weights) is saved once to a temporary folder (or ``--model DIR`` is used); every comparison in a section uses
the same model, batch and lengths, in this one process:

1. ``one_stage_vs_hf_generate``: ``serve`` with a one-stage 16-bit plan (torchrun, one process
   with ``--threads``, default all cores) vs HF ``generate()`` on the same bf16 model (after a warm-up call), greedy,
   end-of-sequence ignored: generated tokens/s of the timed run (serve: its ``makespan_s``,
   which excludes process start and loading, as the HF timing excludes ``from_pretrained``).
2. ``two_stage_vs_one_stage``: a two-stage plan (layers split evenly, half the threads each,
   prefill/decode micro-batches of half the batch, two decode micro-batches circulating) vs the
   one-stage run of section 1; ``two_stage_dist_vs_sockets``: the same plan over
   ``torch.distributed`` (gloo) against the default ring of one host's CPU stages (sockets).
3. ``decode_fraction_of_roofline``: one stage, batch 1: decode tokens/s (decode steps over
   ``decode_s``) over the roofline ``bandwidth / bytes read per decode step`` (the layers'
   weights at their bits, the final norm and LM head, and the KV cache at the last step);
   bandwidth is measured here, in this process, as the best of several ``sum()`` passes over a
   1 GiB bf16 tensor with ``--threads``. Reported for 16-bit and 8-bit plans.
4. ``cpu_hetero``: measured vs simulator-predicted tokens/s of the llmpq, PipeEdge and Uniform
   plans on ``config/clusters/cpu_hetero_300m.yaml`` (:func:`cpu_hetero_section`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from llmpq.files import write_json_atomic
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.plan import MicroBatch, Plan, Stage
from llmpq.runtime import serve
from llmpq.runtime.prompts import synthetic_prompts
from llmpq.workload import Workload

HIDDEN, FFN, HEADS, VOCAB = 1024, 2816, 16, 32000
BANDWIDTH_BYTES = 1 << 30


def save_model(path: Path, layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=HEADS, vocab_size=VOCAB,
                         max_position_embeddings=1024, eos_token_id=2, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.save_pretrained(path)
    return path


def plan_of(model_dir: Path, splits, bits: int, micro_batch, workload: Workload) -> Plan:
    spec = ModelSpec.from_hf_config(Checkpoint(model_dir).config_dict(), name="bench-300m")
    stages = tuple(Stage(f"cpu-{i}", "cpu", (s, e), (bits,) * (e - s))
                   for i, (s, e) in enumerate(splits))  # fmt: skip
    return Plan("bench-300m", spec, workload, "manual", stages, MicroBatch(*micro_batch))


def hf_generate_tokens_per_s(model_dir: Path, prompts, gen_len: int) -> float:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    ids = torch.tensor([p.token_ids for p in prompts])  # equal lengths: no padding
    kwargs = {"max_new_tokens": gen_len, "min_new_tokens": gen_len, "do_sample": False,
              "pad_token_id": 0}  # fmt: skip
    with torch.no_grad():
        model.generate(ids[:, :4], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
        seconds = time.perf_counter() - start
    del model
    return (out.shape[1] - ids.shape[1]) * ids.shape[0] / seconds


def measure_bandwidth_GBps(rounds: int = 5) -> float:
    """Best read bandwidth of ``sum()`` over a 1 GiB bf16 tensor (all cores)."""
    x = torch.ones(BANDWIDTH_BYTES // 2, dtype=torch.bfloat16)
    x.sum()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return BANDWIDTH_BYTES / best / 1e9


def decode_step_bytes(spec: ModelSpec, bits: int, context: int) -> int:
    """Bytes one batch-1 decode step reads: layers at ``bits``, norm + LM head, KV cache."""
    head = spec.head_bytes()
    kv = spec.layer_kv_bytes_per_token() * spec.num_layers * context
    return spec.layer_weight_bytes(bits) * spec.num_layers + head + kv


def cluster_of(threads_per_stage: int):
    from llmpq.cluster import Cluster

    devices = [{"name": f"cpu-{i}", "type": "cpu", "memory_GiB": 8, "cores": threads_per_stage}
               for i in range(2)]  # fmt: skip
    return Cluster.from_dict({"name": "bench", "devices": devices})


def serve_run(model_dir, plan, prompts, out_dir, gen_len, threads_per_stage, ring="auto"):
    result = serve(plan, model_dir, prompts, out_dir, gen_len=gen_len, ignore_eos=True,
                   cluster=cluster_of(threads_per_stage), ring=ring)  # fmt: skip
    return result.metrics


def main_sections(args) -> dict:
    cores = os.cpu_count() or 1
    results: dict = {"settings": vars(args) | {"cores": cores, "torch": torch.__version__,
                                                "platform": platform.platform()}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="llmpq-bench-runtime-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else save_model(tmp / "model", args.layers)
        spec = ModelSpec.from_hf_config(Checkpoint(model_dir).config_dict(), name=model_dir.name)
        params = spec.param_count()
        results["model"] = {"name": spec.name, "layers": spec.num_layers,
                            "hidden": spec.hidden_size, "parameters": params}  # fmt: skip
        print(f"model {spec.name}: {params / 1e6:.0f} M parameters, {spec.num_layers} layers, bf16")
        B, T, G, L = args.batch, args.prompt_len, args.gen_len, spec.num_layers
        w = Workload(B, T, G)
        vocab = spec.vocab_size
        prompts = synthetic_prompts(B, T, vocab, seed=0)

        if not args.skip_basics:
            threads = args.threads
            one = serve_run(model_dir, plan_of(model_dir, [(0, L)], 16, (B, B, 1), w), prompts,
                            tmp / "one", G, threads)  # fmt: skip
            torch.set_num_threads(threads)
            hf = hf_generate_tokens_per_s(model_dir, prompts, G)
            results["one_stage_vs_hf_generate"] = one.tokens_per_s / hf
            results["one_stage"] = one.to_dict()["measured"]
            results["hf_generate_tokens_per_s"] = hf
            print(f"1. one stage {one.tokens_per_s:.2f} tok/s vs HF generate {hf:.2f} tok/s: "
                  f"{one.tokens_per_s / hf:.2f}x  (batch {B}, prompt {T}, gen {G})")  # fmt: skip

            half = max(1, B // 2)
            two_plan = plan_of(model_dir, [(0, L // 2), (L // 2, L)], 16, (half, half, 2), w)
            two = serve_run(model_dir, two_plan, prompts, tmp / "two", G, max(1, threads // 2))
            results["two_stage_vs_one_stage"] = two.tokens_per_s / one.tokens_per_s
            results["two_stage"] = two.to_dict()["measured"] | {
                "busy_fraction": [s["busy_fraction"] for s in two.stages]}  # fmt: skip
            print(f"2. two stages {two.tokens_per_s:.2f} tok/s vs one {one.tokens_per_s:.2f}: "
                  f"{two.tokens_per_s / one.tokens_per_s:.2f}x (stage busy "
                  f"{[round(s['busy_fraction'], 2) for s in two.stages]})")  # fmt: skip
            dist = serve_run(model_dir, two_plan, prompts, tmp / "two-dist", G,
                             max(1, threads // 2), ring="dist")  # fmt: skip
            results["two_stage_dist_vs_sockets"] = dist.tokens_per_s / two.tokens_per_s
            print(f"   the same over torch.distributed (gloo, receives posted ahead): "
                  f"{dist.tokens_per_s:.2f} tok/s, {dist.tokens_per_s / two.tokens_per_s:.2f}x "
                  f"the sockets ring")  # fmt: skip

            bandwidth = measure_bandwidth_GBps()  # with ``threads`` threads, as the decode run
            results["bandwidth_GBps"] = bandwidth
            decode = {}
            D = args.decode_gen_len
            for bits in (16, 8):
                p1 = synthetic_prompts(1, 16, vocab, seed=1)
                m = serve_run(model_dir, plan_of(model_dir, [(0, L)], bits, (1, 1, 1),
                                                 Workload(1, 16, D)), p1, tmp / f"d{bits}", D, threads)  # fmt: skip
                tps = (D - 1) / m.decode_s
                roof = bandwidth * 1e9 / decode_step_bytes(spec, bits, 16 + D)
                decode[str(bits)] = {"decode_tokens_per_s": tps, "roofline_tokens_per_s": roof,
                                     "fraction": tps / roof}  # fmt: skip
                print(f"3. decode batch 1, {bits}-bit: {tps:.2f} tok/s, roofline {roof:.2f} tok/s "
                      f"({bandwidth:.1f} GB/s): {tps / roof:.0%}")  # fmt: skip
            results["decode"] = decode
            results["decode_fraction_of_roofline"] = decode["16"]["fraction"]
        if not args.skip_hetero:
            results["cpu_hetero"] = cpu_hetero_section(args, model_dir, tmp)
    return results


def cpu_hetero_section(args, model_dir: Path, tmp: Path) -> dict:
    """llmpq / PipeEdge / Uniform plans on ``config/clusters/cpu_hetero_300m.yaml`` (cpu_hetero's
    two one-core workers with budgets scaled to this model): the ``cpu`` cost table of this
    model is measured first (one thread, as each worker runs), every method is planned on it
    with the analytic indicator (llmpq under a Σω budget equal to the worst baseline's, θ = 0),
    simulated, and served for real ``--hetero-repeats`` times, the methods in turn each round;
    the median run's tokens/s beside the simulator's, with every run's."""
    from llmpq.cluster import load_cluster
    from llmpq.costmodel.tables import cost_table_path, save_cost_table
    from llmpq.indicator import analytic_indicator
    from llmpq.models.spec import model_spec
    from llmpq.planner import SolverOptions, make_plan, planning_problem
    from llmpq.profiler import ProfileGrid, profile_model
    from llmpq.simulator import simulate

    root = Path(__file__).resolve().parents[1]
    cluster = load_cluster(args.cluster or root / "config" / "clusters" / "cpu_hetero_300m.yaml")
    w = Workload(args.hetero_batch, args.prompt_len, args.gen_len)
    spec = model_spec(model_dir)
    costs = tmp / "costs"
    start = time.perf_counter()
    grid = ProfileGrid(batch=(1, 2, 4, 8), seq=(16, 32, 64), rounds=2)
    table = profile_model(model_dir, threads=1, grid=grid, progress=False)
    save_cost_table(table, cost_table_path(costs, "cpu", spec.name))
    print(
        f"4. cpu_hetero: cost table of this model measured in {time.perf_counter() - start:.0f} s"
    )
    base = planning_problem(model_dir, cluster, w, costs_dir=costs,
                            indicator=analytic_indicator(spec), theta=0.0)  # fmt: skip
    plans = {m: make_plan(base, m) for m in ("pipeedge", "uniform")}
    budget = max(p.quality.sum_omega for p in plans.values())
    problem = base.with_quality(omega_budget=budget)
    plans = {
        "llmpq": make_plan(problem, "llmpq", SolverOptions(time_limit_s=10, gap=0.002))
    } | plans
    prompts = synthetic_prompts(w.batch_size, w.prompt_len, spec.vocab_size, seed=2)
    out: dict = {"cluster": cluster.name, "workload": w.to_dict(), "methods": {}}
    runs: dict[str, list] = {method: [] for method in plans}
    for r in range(args.hetero_repeats):  # rounds over the methods: drift hits them alike
        for method, plan in plans.items():
            runs[method].append(serve(plan, model_dir, prompts, tmp / f"hetero-{method}-{r}",
                                      gen_len=w.gen_len, ignore_eos=True,
                                      cluster=cluster).metrics)  # fmt: skip
    for method, plan in plans.items():
        sim = simulate(plan, problem)
        predicted = sim.tokens_per_s
        m = sorted(runs[method], key=lambda x: x.tokens_per_s)[len(runs[method]) // 2]  # median
        record = {"measured_tokens_per_s": m.tokens_per_s, "predicted_tokens_per_s": predicted,
                  "measured_over_predicted": m.tokens_per_s / predicted,
                  "measured_tokens_per_s_runs": [x.tokens_per_s for x in runs[method]],
                  "prefill_s": {"measured": m.prefill_s, "predicted": sim.prefill_s},
                  "decode_s": {"measured": m.decode_s, "predicted": sim.decode_s},
                  "stage_busy_s": {"measured": [s["busy_s"] for s in m.stages],
                                   "predicted": [s.busy_s for s in sim.stages]},
                  "stage_decode_busy_s": {"measured": [s["decode_busy_s"] for s in m.stages],
                                          "predicted": [s.decode_busy_s for s in sim.stages]},
                  "bits": sorted(set(plan.bits_per_layer())),
                  "layers": [list(s.layers) for s in plan.stages],
                  "micro_batch": [plan.micro_batch.prefill_size, plan.micro_batch.decode_size,
                                  plan.micro_batch.decode_count],
                  "sum_omega": plan.quality.sum_omega}  # fmt: skip
        out["methods"][method] = record
        each = ", ".join(f"{x:.1f}" for x in record["measured_tokens_per_s_runs"])
        print(f"   {method:<9} measured {m.tokens_per_s:7.2f} tok/s (median of {each}), simulated "
              f"{predicted:7.2f} ({m.tokens_per_s / predicted:.2f}x); bits {record['bits']}, "
              f"layers {record['layers']}, micro-batches {record['micro_batch']}")  # fmt: skip
        pairs = list(zip(m.stages, sim.stages, strict=True))
        ratios = {k: [round(a[k] / getattr(b, k), 2) for a, b in pairs]
                  for k in ("prefill_busy_s", "decode_busy_s")}  # fmt: skip
        print(f"             measured/predicted: prefill {m.prefill_s / sim.prefill_s:.2f}, "
              f"decode {m.decode_s / sim.decode_s:.2f}; per stage busy in prefill "
              f"{ratios['prefill_busy_s']}, in decode {ratios['decode_busy_s']}")  # fmt: skip
    best = max(out["methods"][m]["measured_tokens_per_s"] for m in ("pipeedge", "uniform"))
    out["llmpq_vs_best_baseline_measured"] = out["methods"]["llmpq"]["measured_tokens_per_s"] / best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the figures here (atomic)")
    parser.add_argument("--layers", type=int, default=20, help="20: ~322 M parameters")
    parser.add_argument(
        "--model", help="a local checkpoint instead (e.g. results/models/smollm2-135m)"
    )
    parser.add_argument(
        "--cluster",
        help="section 4's cluster (default cpu_hetero_300m.yaml; "
        "cpu_hetero_smollm2.yaml for the real model)",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--gen-len", type=int, default=16)
    parser.add_argument("--decode-gen-len", type=int, default=24)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="one stage's (and HF's) threads; two stages get half each")  # fmt: skip
    parser.add_argument("--skip-hetero", action="store_true")
    parser.add_argument("--skip-basics", action="store_true", help="only the cpu_hetero section")
    parser.add_argument("--hetero-batch", type=int, default=8)
    parser.add_argument("--hetero-repeats", type=int, default=3,
                        help="serve each plan this many times (interleaved); report the median")  # fmt: skip
    args = parser.parse_args()
    results = main_sections(args)
    if args.json:
        write_json_atomic(args.json, results)
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
