"""The paper's 11 clusters on the planning track: llmpq against PipeEdge, Uniform and AdaBits.

    python bench/paper_clusters.py [--json PATH] [--clusters 03 07] [--reference-limit 60]

Each cluster (reference §9.1: OPT-13B/30B/66B and BLOOM-176B on T4/P100/V100/A100 mixes;
batch 32, prompt 512, generation 100) is planned on catalog roofline costs with the analytic
indicator. The baselines keep their own rules (the highest uniform bitwidth that fits, or the
best quality that fits); llmpq plans under a hard quality budget equal to the largest Σω among
the baselines — never worse quality than the worst baseline — with θ = 0. Every plan is then
simulated event by event (:mod:`llmpq.simulator`): the tokens/s printed are simulated.

Also per cluster: llmpq's planning wall time (the whole outer search) and proven gap, and the
original paper's ILP (:mod:`llmpq.planner.reference`) solved on the instance llmpq chose (its
order and micro-batches): its solve time against llmpq's compact ILP on that same instance
(``llmpq_instance_solve_s``), and its plan's objective on llmpq's objective.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import BenchRun  # noqa: E402
from llmpq.cluster import load_cluster  # noqa: E402
from llmpq.errors import UserError  # noqa: E402
from llmpq.indicator import analytic_indicator  # noqa: E402
from llmpq.models.spec import model_spec  # noqa: E402
from llmpq.planner import SolverOptions, make_plan, planning_problem  # noqa: E402
from llmpq.planner.ilp import solve_instance  # noqa: E402
from llmpq.planner.instance import instance_for  # noqa: E402
from llmpq.planner.reference import solve_reference  # noqa: E402
from llmpq.simulator import simulate  # noqa: E402
from llmpq.workload import load_workload  # noqa: E402

MODELS = {
    "01": "opt-13b", "02": "opt-13b", "03": "opt-30b", "04": "opt-30b", "05": "opt-66b",
    "06": "opt-66b", "07": "bloom-176b", "08": "bloom-176b", "09": "opt-30b", "10": "opt-66b",
    "11": "bloom-176b",
}  # fmt: skip
BASELINES = ("pipeedge", "uniform", "adabits")
PAPER_AVERAGE_SPEEDUP = 2.26


def run_cluster(number: str, reference_limit_s: float, gap: float) -> dict:
    cluster = load_cluster(ROOT / "config" / "clusters" / f"paper_{number}.yaml")
    workload = load_workload(ROOT / "config" / "workloads" / "paper.yaml")
    return compare_methods(MODELS[number], cluster, workload, gap, reference_limit_s)


def compare_methods(model: str, cluster, workload, gap: float,
                    reference_limit_s: float | None = None) -> dict:  # fmt: skip
    """Every baseline, then llmpq under the worst baseline's Σω, simulated; with
    ``reference_limit_s``, the original paper's ILP on llmpq's instance too."""
    spec = model_spec(model)
    base = planning_problem(model, cluster, workload, costs_dir=None,
                            indicator=analytic_indicator(spec), theta=0.0)  # fmt: skip
    record: dict = {"cluster": cluster.name, "model": model,
                    "devices": [d.type.name for d in cluster.devices]}  # fmt: skip
    budgets = []
    for method in BASELINES:
        try:
            plan = make_plan(base, method)
        except UserError as err:
            record[f"{method}_tokens_per_s"] = None
            record[f"{method}_note"] = str(err)
            continue
        record[f"{method}_tokens_per_s"] = simulate(plan, base).tokens_per_s
        record[f"{method}_sum_omega"] = plan.quality.sum_omega
        budgets.append(plan.quality.sum_omega)
    problem = base.with_quality(omega_budget=max(budgets)) if budgets else base
    options = SolverOptions(time_limit_s=10.0, gap=gap)
    clock = time.perf_counter()
    plan = make_plan(problem, "llmpq", options)
    record["llmpq_planning_s"] = time.perf_counter() - clock
    record["llmpq_tokens_per_s"] = simulate(plan, problem).tokens_per_s
    record["llmpq_predicted_tokens_per_s"] = plan.predicted.tokens_per_s
    record["llmpq_sum_omega"] = plan.quality.sum_omega
    record["llmpq_gap"] = plan.solver.gap
    record["llmpq_status"] = plan.solver.status
    record["llmpq_objective"] = plan.solver.objective
    record["llmpq_bits"] = sorted(set(plan.bits_per_layer()))
    record["llmpq_micro_batch"] = [plan.micro_batch.prefill_size, plan.micro_batch.decode_size,
                                   plan.micro_batch.decode_count]  # fmt: skip
    record["llmpq_devices_used"] = len(plan.stages)
    record["llmpq_idle_devices"] = [d.device for d in plan.idle_devices]
    record["llmpq_search_space"] = plan.solver.space
    best = max((record[f"{m}_tokens_per_s"] or 0.0) for m in BASELINES)
    record["best_baseline_tokens_per_s"] = best
    record["speedup_vs_best_baseline"] = record["llmpq_tokens_per_s"] / best if best else None
    if reference_limit_s is None:
        return record

    order = [cluster.device(s.device) for s in plan.stages]
    inst = instance_for(problem, order, plan.micro_batch)
    clock = time.perf_counter()
    solve_instance(inst, SolverOptions(time_limit_s=reference_limit_s, gap=gap))
    record["llmpq_instance_solve_s"] = time.perf_counter() - clock  # like for like with the ref
    ref = solve_reference(problem, order, plan.micro_batch,
                          SolverOptions(time_limit_s=reference_limit_s, gap=gap))  # fmt: skip
    record["reference_status"] = ref.solution.status
    record["reference_solve_s"] = ref.solution.seconds
    record["reference_binaries"] = ref.num_binaries
    record["reference_objective"] = ref.found.value if ref.found else None
    if ref.found is not None and math.isfinite(ref.found.value):
        from llmpq.plan import SolverReport
        from llmpq.planner import plan_from_incumbent

        ref_plan = plan_from_incumbent(problem, ref.found, "reference", SolverReport("CBC", "x"))
        record["reference_tokens_per_s"] = simulate(ref_plan, problem).tokens_per_s
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--clusters", nargs="*", default=sorted(MODELS), help="e.g. 03 07")
    parser.add_argument("--reference-limit", type=float, default=60.0, help="seconds")
    parser.add_argument("--gap", type=float, default=0.002, help="llmpq's gap target")
    args = parser.parse_args()
    run = BenchRun.start()
    records = []
    head = (f"{'cluster':<9}{'model':<11}{'llmpq':>8}{'PipeEdge':>9}{'Uniform':>9}{'AdaBits':>9}"
            f"{'speedup':>8}{'plan s':>8}{'gap':>7}{'used':>6}{'ref s':>8}{'ref obj/ours':>13}")  # fmt: skip
    print("simulated generated tokens/s; llmpq under a Σω budget = the worst baseline's quality")
    print(head)
    for number in args.clusters:
        r = run_cluster(number, args.reference_limit, args.gap)
        records.append(r)

        def fmt(x):
            return f"{x:9.2f}" if x else f"{'—':>9}"

        ratio = (r["reference_objective"] / r["llmpq_objective"]
                 if r["reference_objective"] and math.isfinite(r["reference_objective"]) else None)  # fmt: skip
        print(f"{r['cluster']:<9}{r['model']:<11}{r['llmpq_tokens_per_s']:8.2f}"
              f"{fmt(r['pipeedge_tokens_per_s'])}{fmt(r['uniform_tokens_per_s'])}"
              f"{fmt(r['adabits_tokens_per_s'])}{r['speedup_vs_best_baseline']:8.2f}"
              f"{r['llmpq_planning_s']:8.2f}{r['llmpq_gap']:7.2%}"
              f"{r['llmpq_devices_used']:>3}/{len(r['devices']):<2}{r['reference_solve_s']:8.1f}"
              f"{(f'{ratio:13.4f}' if ratio else '—'.rjust(13))}"
              f"{'' if r['reference_status'] == 'OPTIMAL' else ' (' + r['reference_status'] + ')'}",
              flush=True)  # fmt: skip
    speedups = [r["speedup_vs_best_baseline"] for r in records if r["speedup_vs_best_baseline"]]
    geomean = math.exp(sum(map(math.log, speedups)) / len(speedups))
    print(f"geometric-mean speedup over the best baseline: {geomean:.2f}x "
          f"(the paper reports {PAPER_AVERAGE_SPEEDUP}x on average over its baselines)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"clusters": records, "geomean_speedup_vs_best_baseline": geomean,
             "paper_average_speedup": PAPER_AVERAGE_SPEEDUP, "run": run.finish()},
            indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
