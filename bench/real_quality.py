"""The paper's quality claim on real weights: llmpq under a calibrated ε against PipeEdge, Uniform
and AdaBits on two CPU workers whose budgets do not fit 16 (nor 8) bits.

Run::

    python bench/real_quality.py [--model results/models/smollm2-135m]
        [--cluster config/clusters/cpu_hetero_smollm2.yaml] [--workload config/workloads/cpu_small.yaml]
        [--indicator results/indicator/smollm2-135m-hessian.nc] [--calibrate 16] [--eps 10 20]
        [--repeats 3] [--json results/bench/real_quality.json]

1. The ``cpu`` cost table of the model is measured here (one thread, as each worker runs; the
   workflow's execution grid), unless ``--costs DIR`` holds ``DIR/cpu/<model>.nc``.
2. The Hessian (diagonal Fisher) indicator, calibrated to perplexity: ``--indicator FILE`` (one
   that carries a calibration, e.g. written by ``bench/indicator_quality.py --write-indicators``),
   or computed here and calibrated on ``--calibrate`` random plans.
3. Plans on the same problem: llmpq once per ``--eps`` (``--ppl-increase-pct eps``, θ = 0 inside
   the limit: the fastest plan whose predicted increase is at most ε) and the three baselines.
4. Each plan served for real ``--repeats`` times on the cluster (the methods in turn each round,
   the median run's tokens/s), and the perplexity of exactly the served weights measured on the
   model's held-out text (``llmpq ppl --plan``'s path: RTN, the plan's stages and bits).
5. The claim, checked: llmpq's measured perplexity is at or below every baseline's that serves as
   fast or faster, and its measured tokens/s at least every baseline's at equal or better
   perplexity (``claim_holds``).

The shipped model's weights were stored as Q4_1 at source (``llmpq import``): its perplexities
are relative to those weights.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from llmpq.cluster import load_cluster
from llmpq.costmodel.tables import cost_table_path, save_cost_table
from llmpq.files import write_json_atomic
from llmpq.indicator import calibrate_indicator, compute_indicator, load_indicator
from llmpq.indicator.calibration import calibration_of
from llmpq.models.gguf import load_import_record
from llmpq.models.spec import model_spec
from llmpq.planner import SolverOptions, make_plan, planning_problem
from llmpq.profiler import ProfileGrid, profile_model
from llmpq.quality import plan_perplexity
from llmpq.runtime import serve
from llmpq.runtime.prompts import synthetic_prompts
from llmpq.simulator import simulate
from llmpq.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("pipeedge", "uniform", "adabits")
GRID = ProfileGrid(batch=(1, 2, 4, 8, 16), seq=(16, 32, 64, 128), rounds=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/models/smollm2-135m")
    parser.add_argument("--cluster", default=str(ROOT / "config/clusters/cpu_hetero_smollm2.yaml"))
    parser.add_argument("--workload", default=str(ROOT / "config/workloads/cpu_small.yaml"))
    parser.add_argument("--costs", help="cost tables DIR/cpu/<model>.nc (default: measured here)")
    parser.add_argument("--indicator", help="a calibrated indicator file (default: computed here)")
    parser.add_argument("--calibrate", type=int, default=16, help="random plans to calibrate on")
    parser.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[10.0, 20.0],
        help="llmpq's perplexity increase limits, %%: one llmpq plan each",
    )
    parser.add_argument("--repeats", type=int, default=3, help="served runs per plan")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    spec = model_spec(args.model)
    cluster, workload = load_cluster(args.cluster), load_workload(args.workload)
    record = load_import_record(args.model)
    source = record.source_quantization if record else "none"
    print(f"model {spec.name} ({spec.num_layers} layers; stored as {source} at source), "
          f"cluster {cluster.name}, workload {workload.to_dict()}; load {os.getloadavg()[0]:.2f}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="llmpq-bench-real-") as tmp:
        tmp = Path(tmp)
        costs = Path(args.costs) if args.costs else tmp / "costs"
        if not cost_table_path(costs, "cpu", spec.name).is_file():
            t = time.perf_counter()
            table = profile_model(args.model, threads=1, grid=GRID, progress=False)
            save_cost_table(table, cost_table_path(costs, "cpu", spec.name))
            print(f"1. cpu cost table measured in {time.perf_counter() - t:.0f} s")
        if args.indicator:
            omega = load_indicator(args.indicator, spec)
        else:
            t = time.perf_counter()
            omega = calibrate_indicator(compute_indicator(args.model, "hessian"), args.model,
                                        args.calibrate)  # fmt: skip
            print(f"2. hessian indicator calibrated on {args.calibrate} plans in "
                  f"{time.perf_counter() - t:.0f} s")  # fmt: skip
        cal = calibration_of(omega)
        if cal is None:
            parser.error(f"--indicator {args.indicator} carries no calibration")
        base = planning_problem(args.model, cluster, workload, costs_dir=costs, indicator=omega,
                                theta=0.0)  # fmt: skip
        options = SolverOptions(time_limit_s=30, gap=0.002)
        plans = {}
        for eps in args.eps:
            try:
                problem = planning_problem(args.model, cluster, workload, costs_dir=costs,
                                           indicator=omega, ppl_increase_pct=eps)  # fmt: skip
                plans[f"llmpq-eps{eps:g}"] = make_plan(problem, "llmpq", options)
            except Exception as err:  # noqa: BLE001 - an ε no plan meets is a result
                print(f"   llmpq at ε = {eps:g} %: no plan ({err})")
        for method in BASELINES:
            try:
                plans[method] = make_plan(base, method, options)
            except Exception as err:  # noqa: BLE001 - a baseline without a plan is a result
                print(f"   {method}: no plan ({err})")
        prompts = synthetic_prompts(
            workload.batch_size, workload.prompt_len, spec.vocab_size, seed=2
        )
        runs: dict[str, list] = {m: [] for m in plans}
        for r in range(args.repeats):  # rounds over the methods: drift hits them alike
            for method, plan in plans.items():
                runs[method].append(serve(plan, args.model, prompts, tmp / f"{method}-{r}",
                                          gen_len=workload.gen_len, ignore_eos=True,
                                          cluster=cluster).metrics)  # fmt: skip
        reference = plan_perplexity(args.model, [16] * spec.num_layers).perplexity
        rows: dict[str, dict] = {}
        for method, plan in plans.items():
            bits = plan.bits_per_layer()
            ppl = plan_perplexity(args.model, bits,
                                  stage_layers=[tuple(s.layers) for s in plan.stages]).perplexity  # fmt: skip
            median = sorted(runs[method], key=lambda m: m.tokens_per_s)[len(runs[method]) // 2]
            rows[method] = {
                "bits": {str(b): bits.count(b) for b in sorted(set(bits))},
                "layers": [list(s.layers) for s in plan.stages],
                "sum_omega": plan.quality.sum_omega,
                "predicted_increase_pct": cal.ppl_increase_pct(plan.quality.sum_omega),
                "perplexity": ppl,
                "increase_pct": 100 * (ppl / reference - 1),
                "served_tokens_per_s": median.tokens_per_s,
                "served_tokens_per_s_runs": [m.tokens_per_s for m in runs[method]],
                "simulated_tokens_per_s": simulate(plan, base).tokens_per_s,
            }

    print(f"16-bit perplexity {reference:.3f} (weights stored as {source} at source)")
    print(f"{'method':<14}{'bits (layers)':<24}{'Σω':>8}{'pred. +%':>10}{'ppl':>9}{'+%':>8}"
          f"{'served tok/s':>14}{'sim. tok/s':>12}")  # fmt: skip
    for method, row in rows.items():
        bits = " ".join(f"{b}:{n}" for b, n in row["bits"].items())
        print(f"{method:<14}{bits:<24}{row['sum_omega']:>8.3f}{row['predicted_increase_pct']:>10.1f}"
              f"{row['perplexity']:>9.3f}{row['increase_pct']:>8.1f}"
              f"{row['served_tokens_per_s']:>14.2f}{row['simulated_tokens_per_s']:>12.2f}")  # fmt: skip
    claims = {}
    for ours_name in [m for m in rows if m.startswith("llmpq")]:
        ours, others = rows[ours_name], [m for m in rows if not m.startswith("llmpq")]
        faster = [
            m for m in others if rows[m]["served_tokens_per_s"] >= ours["served_tokens_per_s"]
        ]
        better = [m for m in others if rows[m]["perplexity"] <= ours["perplexity"]]
        ppl_ok = all(ours["perplexity"] <= rows[m]["perplexity"] for m in faster)
        speed_ok = all(
            ours["served_tokens_per_s"] >= rows[m]["served_tokens_per_s"] for m in better
        )
        error = abs(ours["predicted_increase_pct"] - ours["increase_pct"]) / max(
            ours["increase_pct"], 1e-9
        )
        claims[ours_name] = {"perplexity": ppl_ok, "tokens_per_s": speed_ok,
                             "as_fast_or_faster": faster, "as_good_or_better": better,
                             "calibration_error": error}  # fmt: skip
        print(f"{ours_name}: perplexity at or below every baseline as fast or faster "
              f"({', '.join(faster) or 'none'}): {ppl_ok}; tokens/s at least every baseline at "
              f"equal or better perplexity ({', '.join(better) or 'none'}): {speed_ok}; "
              f"predicted vs measured increase off by {error:.0%}")  # fmt: skip
    result = {
        "settings": vars(args) | {"cores": os.cpu_count(), "torch": torch.__version__,
                                  "platform": platform.platform(), "load_average": os.getloadavg()[0]},  # fmt: skip
        "model": spec.name, "source_quantization": source, "reference_perplexity": reference,
        "calibration": {"slope_pct_per_omega": cal.slope_pct_per_omega, "points": cal.points},
        "methods": rows, "claims": claims,
        "claim_holds": all(c["perplexity"] and c["tokens_per_s"] for c in claims.values()),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    if args.json:
        write_json_atomic(args.json, result)
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
