"""``llmpq simulate``: play a plan's schedule event by event and report its figures."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq simulate --plan plan.json --out sim.json          # cluster file found by the plan's name
  llmpq simulate --plan plan.json --cluster config/clusters/paper_03.yaml --costs results/costs \\
                 --out sim.json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "simulate",
        help="event-driven simulation of a plan",
        description="Simulate a plan's prefill and decode micro-batches moving through the "
        "stages and links (the runtime's schedule) and write makespan, generated tokens/s, "
        "per-stage busy time, bubble fraction and peak memory as JSON.",
        epilog=EPILOG,
    )
    p.add_argument("--plan", required=True, help="plan JSON")
    p.add_argument("--cluster", help="cluster YAML (default: the file in config/clusters named "
                   "like the plan's cluster)")  # fmt: skip
    p.add_argument("--costs", default="results/costs", help="cost tables DIR/<type>/<model>.nc")
    p.add_argument("--comm", help="measured transfers (JSON) for devices on one host")
    p.add_argument("--out", required=True, help="result JSON, written atomically")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from llmpq.cluster import find_cluster_file, load_cluster
    from llmpq.files import write_json_atomic
    from llmpq.plan import load_plan
    from llmpq.simulator import problem_for_plan, simulate

    plan = load_plan(args.plan)
    cluster = load_cluster(args.cluster or find_cluster_file(plan.cluster))
    comm = None
    if args.comm:
        from llmpq.costmodel.comm import load_comm

        comm = load_comm(args.comm)
    sim = simulate(plan, problem_for_plan(plan, cluster, args.costs, comm))
    predicted = plan.predicted.tokens_per_s if plan.predicted else None
    write_json_atomic(args.out, sim.to_dict() | {"plan": args.plan, "method": plan.method,
                                                "predicted_tokens_per_s": predicted})  # fmt: skip
    bubble = max(s.bubble_fraction for s in sim.stages)
    print(f"{plan.method}: {sim.tokens_per_s:.2f} tokens/s, makespan {sim.makespan_s:.2f} s "
          f"(prefill {sim.prefill_s:.2f} s), worst bubble {bubble:.0%} -> {args.out}")  # fmt: skip
    return 0
