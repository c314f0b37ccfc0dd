"""llmpq's plans and certificates against the brute-force optimum on small random problems.

    python bench/planner_oracle.py [--instances 110] [--seed 0] [--max-layers 6] [--json PATH]

Instances ``seed … seed + instances − 1`` are drawn by
:func:`tests.planner.oracle.random_instance` (2–3 catalog GPUs with small memories, one or two
hosts, 4 … ``max-layers``-layer cuts of OPT, BLOOM, LLaMA and Mistral shapes, per-layer ω, θ = 0
/ small / large or a Σω budget), solved exactly by enumeration
(:func:`tests.planner.oracle.brute_force`) and by ``make_plan(problem, "llmpq",
SolverOptions(gap=0.01))``. Each plan is re-priced by ``evaluate_stages`` and sorted into the
outcomes below; a false certificate is a plan worse than the optimum by more than its reported
gap, or a bound above the optimum. Printed: a line per instance, then the outcome counts, the
excess of false certificates over the optimum, the worst reported gap, and the planning seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import BenchRun  # noqa: E402
from llmpq.planner import SolverOptions  # noqa: E402
from tests.planner.oracle import GAP_TARGET, OUTCOMES, Verdict, judge, random_instance  # noqa: E402


def summarise(verdicts: list[Verdict]) -> dict:
    counts = {name: sum(v.outcome == name for v in verdicts) for name in OUTCOMES}
    excess = [v.excess_pct for v in verdicts
              if v.outcome == "false_certificate" and v.excess_pct is not None]  # fmt: skip
    gaps = [v.gap for v in verdicts if v.gap is not None]
    seconds = [v.planner_s for v in verdicts]
    return {
        "instances": len(verdicts),
        "outcomes": counts,
        "false_certificate_excess_pct": {
            "median": statistics.median(excess) if excess else None,
            "mean": statistics.fmean(excess) if excess else None,
            "worst": max(excess) if excess else None,
        },
        "worst_reported_gap": max(gaps) if gaps else None,
        "planner_s": {"median": statistics.median(seconds), "max": max(seconds)},
        "oracle_s": {
            "median": statistics.median(v.oracle_s for v in verdicts),
            "max": max(v.oracle_s for v in verdicts),
        },  # fmt: skip
        "failing_seeds": [v.seed for v in verdicts if not v.ok],
    }


def print_table(summary: dict) -> None:
    n = summary["instances"]
    print(f"\n{'outcome':<84}{'instances':>10}")
    for name, text in OUTCOMES.items():
        count = summary["outcomes"][name]
        if count or name not in ("planner_error", "below_oracle"):
            print(f"{text:<84}{count:>5} {count / n:5.0%}")
    ex = summary["false_certificate_excess_pct"]

    def pct(x):
        return "—" if x is None else f"{x:.2f} %"

    print(f"\nfalse certificates, excess over the optimum: median {pct(ex['median'])}, "
          f"mean {pct(ex['mean'])}, worst {pct(ex['worst'])}")  # fmt: skip
    gap = summary["worst_reported_gap"]
    print(f"worst reported gap: {'—' if gap is None else f'{gap:.4%}'} "
          f"(target {summary.get('gap_target', GAP_TARGET):.2%})")  # fmt: skip
    ps, os_ = summary["planner_s"], summary["oracle_s"]
    print(f"llmpq planning seconds: median {ps['median']:.2f}, max {ps['max']:.2f}; "
          f"oracle: median {os_['median']:.2f}, max {os_['max']:.2f}")  # fmt: skip
    if summary["failing_seeds"]:
        print(f"seeds failing the oracle test: {summary['failing_seeds']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=110, help="how many random problems")
    parser.add_argument("--seed", type=int, default=0, help="the first instance's seed")
    parser.add_argument("--max-layers", type=int, default=6, help="4 … this many layers")
    parser.add_argument("--time-limit", type=float, default=60.0, help="llmpq's limit, seconds")
    parser.add_argument(
        "--gap",
        type=float,
        default=GAP_TARGET,
        help=f"llmpq's gap target (default {GAP_TARGET}; at most {GAP_TARGET})",
    )
    parser.add_argument("--json", help="write the verdicts and the summary here")
    args = parser.parse_args()
    options = SolverOptions(time_limit_s=args.time_limit, gap=min(args.gap, GAP_TARGET))
    verdicts = []
    run = BenchRun.start()
    clock = time.perf_counter()
    print(f"{'seed':>5} {'outcome':<18}{'optimum ms':>12}{'llmpq ms':>12}{'excess':>9}"
          f"{'gap':>8}{'plan s':>8}  instance")  # fmt: skip
    for seed in range(args.seed, args.seed + args.instances):
        v = judge(random_instance(seed, max_layers=args.max_layers), options)
        verdicts.append(v)

        def num(x, spec):
            return f"{x:{spec}}" if x is not None else f"{'—':>{spec.split('.')[0]}}"

        print(f"{seed:>5} {v.outcome:<18}{num(v.optimum, '12.4f')}{num(v.value, '12.4f')}"
              f"{num(v.excess_pct, '8.2f')}%{num(v.gap, '8.4f')}{v.planner_s:8.2f}  "
              f"{v.summary}", flush=True)  # fmt: skip
    summary = summarise(verdicts)
    summary["wall_s"] = time.perf_counter() - clock
    summary["gap_target"] = options.gap
    print_table(summary)
    if args.json:
        records = {"summary": summary, "verdicts": [v.to_dict() for v in verdicts],
                   "run": run.finish()}  # fmt: skip
        Path(args.json).write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
