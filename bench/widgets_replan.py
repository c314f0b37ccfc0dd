"""How long PlanExplorer takes to re-plan after a θ change (the issue's ≤ 1 s target).

Usage::

    python bench/widgets_replan.py                 # both cases, 5 re-plans each
    python bench/widgets_replan.py --repeats 9 --time-limit 2 --gap 0.05

Two cases: the default CPU cluster (``config/clusters/cpu_hetero.yaml``, ``cpu_small``
workload) with the default model (``results/models/default`` if trained, else the ``tiny``
preset trained into a temp dir), and a 4-GPU catalog cluster (2×T4 + 2×V100-16G) with a 40-layer
shape (``llama-2-13b``, paper workload). Each explorer is built once (its problem is then
cached, as in a notebook); then θ is moved through a fixed cycle of values and every re-plan is
timed end to end as the widget does it (llmpq's plan, the cached baselines, the figure and the
table). Prints the first build (for a checkpoint it includes the variance indicator's pass over
calibration text), the median and the max re-plan, and the share spent in ``make_plan``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llmpq.planner import SolverOptions, make_plan
from llmpq.widgets import PlanExplorer

THETAS = (0.1, 3.0, 30.0, 300.0, 3000.0, 1.0, 10.0, 100.0, 1000.0)


def default_model(tmp: Path) -> str:
    trained = Path("results/models/default")
    if (trained / "config.json").is_file():
        return str(trained)
    from llmpq.models.default import train_default_model

    out = tmp / "tiny-default"
    train_default_model(out, preset="tiny", max_train_seconds=0, progress=False, num_threads=1)
    return str(out)


def measure(name: str, explorer_args: dict, options: SolverOptions, repeats: int) -> None:
    clock = time.perf_counter()
    explorer = PlanExplorer(options=options, **explorer_args)
    build_s = time.perf_counter() - clock
    if explorer.error:
        print(f"{name}: no plan: {explorer.error}")
        return
    totals, planner = [], []
    for theta in (THETAS * (1 + repeats // len(THETAS)))[:repeats]:
        explorer.theta.value = theta  # the widget re-plans, as on a slider move
        totals.append(explorer.seconds)
        problem = explorer.problem
        clock = time.perf_counter()
        make_plan(problem, "llmpq", options)  # the planner alone, same inputs
        planner.append(time.perf_counter() - clock)
    plan = explorer.plan
    best_baseline = max((b.predicted.tokens_per_s for b in explorer.baselines.values()
                         if not isinstance(b, str)), default=float("nan"))  # fmt: skip
    print(
        f"{name}: last plan {plan.solver.status} (gap {plan.solver.gap or 0:.1%}), "
        f"{plan.predicted.tokens_per_s:.1f} tokens/s; best baseline {best_baseline:.1f} tokens/s"
    )
    print(
        f"{name}: {plan.model_shape.num_layers} layers on {len(problem.cluster.devices)} devices; "
        f"first build {build_s:.2f} s; re-plan median {statistics.median(totals):.3f} s, "
        f"max {max(totals):.3f} s over {len(totals)} θ values; make_plan alone median "
        f"{statistics.median(planner):.3f} s ({statistics.median(planner) / statistics.median(totals):.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=2.0, help="SolverOptions.time_limit_s")
    parser.add_argument("--gap", type=float, default=0.05, help="SolverOptions.gap")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: tiny shapes run fastest, and a busy 2-core box "
                             "makes two threads crawl in the checkpoint's indicator pass)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = SolverOptions(time_limit_s=args.time_limit, gap=args.gap)
    print(f"solver: time_limit_s={args.time_limit}, gap={args.gap}; torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        measure(
            "cpu-hetero",
            {"cluster": "config/clusters/cpu_hetero.yaml", "model": default_model(Path(tmp)),
             "workload": "config/workloads/cpu_small.yaml"},
            options, args.repeats,
        )  # fmt: skip
    measure(
        "2xT4+2xV100-16G",
        {"devices": {"T4": 2, "V100-16G": 2}, "model": "llama-2-13b",
         "workload": "config/workloads/paper.yaml"},
        options, args.repeats,
    )  # fmt: skip


if __name__ == "__main__":
    main()
