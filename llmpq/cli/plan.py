"""``llmpq plan``: partition, bits and micro-batches for a cluster (or ``--check`` a plan)."""

from __future__ import annotations

import argparse

from llmpq.cli.common import add_subcommand

EPILOG = """examples:
  llmpq plan --model opt-30b --cluster config/clusters/paper_03.yaml \\
             --workload config/workloads/paper.yaml --theta 1 --out plan.json
  llmpq plan --model results/models/default --cluster config/clusters/cpu_hetero.yaml \\
             --workload config/workloads/cpu_small.yaml --costs results/costs \\
             --indicator results/indicator/default.nc --ppl-increase-pct 2 --out plan.json
  llmpq plan --model opt-30b --cluster C.yaml --workload W.yaml --method pipeedge --out pe.json
  llmpq plan --check plan.json --cluster config/clusters/paper_03.yaml
  # a dataset: the planner also chooses how many sequences are in flight
  llmpq plan --model results/models/smollm2-135m --cluster config/clusters/cpu_single.yaml \
             --prompts config/prompts/example_openai.jsonl --costs results/costs --out plan.json
  llmpq plan --model opt-30b --cluster C.yaml --workload config/workloads/chat_mix.yaml \
             --out plan.json      # a workload YAML of length histograms (prompts: N)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_subcommand(
        sub,
        "plan",
        help="choose the partition, per-layer bits and micro-batches",
        description="Plan offline batch inference of a model on a cluster: the pipeline order "
        "and layer ranges, each layer's bitwidth, and the prefill/decode micro-batches, "
        "minimising the predicted makespan under the quality target (python-mip; the gap to "
        "the best possible plan is reported). Baselines: pipeedge, uniform, adabits.",
        epilog=EPILOG,
    )
    p.add_argument("--check", metavar="PLAN", help="validate an existing plan against --cluster")
    p.add_argument("--model", help="local HF checkpoint directory or a shape name (opt-30b, ...)")
    p.add_argument("--cluster", required=True, help="cluster YAML")
    p.add_argument("--workload", help="workload YAML: batch_size, prompt_len, gen_len; or a "
                   "dataset: prompts, prompt_len and max_new_tokens histograms")  # fmt: skip
    p.add_argument("--prompts", help="plan for this prompts file (llmpq JSONL or OpenAI batch; "
                   "--model must be a checkpoint to tokenize it)")  # fmt: skip
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="output limit of a request in --prompts that sets none (default 64)",
    )
    p.add_argument("--method", default="llmpq", help="llmpq | pipeedge | uniform | adabits")
    p.add_argument("--costs", default="results/costs", help="cost tables DIR/<type>/<model>.nc "
                   "(types without one use the roofline of their datasheet)")  # fmt: skip
    p.add_argument("--indicator", help="ω file from llmpq indicator (default: hessian for a "
                   "checkpoint, analytic for a shape name)")  # fmt: skip
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--theta", type=float, help="ms of makespan one unit of Σω is worth")
    quality.add_argument("--quality-budget", type=float, help="hard limit on the plan's Σω")
    quality.add_argument("--ppl-increase-pct", type=float,
                         help="hard limit on the predicted perplexity increase, in percent "
                         "(needs an indicator with a quality calibration)")  # fmt: skip
    p.add_argument("--comm", help="measured transfers (JSON from the profiler) for one host")
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds for the whole search")
    p.add_argument("--gap", type=float, default=0.002, help="relative optimality gap to prove")
    p.add_argument(
        "--solver", default="CBC", help="CBC (default) or HiGHS (pip install mip[highs])"
    )
    p.add_argument("--out", help="plan JSON, written atomically")
    p.set_defaults(run=run)


def _require(args: argparse.Namespace, *names: str) -> None:
    from llmpq.errors import UserError

    for name in names:
        if getattr(args, name) is None:
            flag = "--" + name.replace("_", "-")
            raise UserError(flag, None, f"give {flag} (or use --check PLAN)", problem="is missing")


def run(args: argparse.Namespace) -> int:
    from llmpq.cluster import load_cluster
    from llmpq.plan import load_plan, save_plan
    from llmpq.planner import SolverOptions, make_plan, planning_problem
    from llmpq.planner.check import check_plan

    cluster = load_cluster(args.cluster)
    if args.check:
        plan = load_plan(args.check)
        check_plan(plan, cluster)
        print(f"{args.check}: valid for cluster {cluster.name} "
              f"({len(plan.stages)} stages, {plan.model_shape.num_layers} layers)")  # fmt: skip
        return 0
    _require(args, "model", "out")
    from llmpq.dataset_workload import DatasetWorkload, load_any_workload, requests_workload
    from llmpq.errors import UserError

    if (args.workload is None) == (args.prompts is None):
        raise UserError("--workload", args.workload, "give exactly one of --workload and "
                        "--prompts", "is missing" if args.workload is None else "clashes")  # fmt: skip
    workload = (requests_workload(args.prompts, args.model, args.max_new_tokens) if args.prompts
                else load_any_workload(args.workload))  # fmt: skip
    dataset = workload if isinstance(workload, DatasetWorkload) else None

    indicator, comm = None, None
    if args.indicator:
        from llmpq.indicator import load_indicator

        indicator = load_indicator(args.indicator)
    if args.comm:
        from llmpq.costmodel.comm import load_comm

        comm = load_comm(args.comm)
    problem = planning_problem(
        args.model, cluster, dataset.time_shape(1) if dataset else workload, costs_dir=args.costs,
        indicator=indicator, theta=args.theta, quality_budget=args.quality_budget,
        ppl_increase_pct=args.ppl_increase_pct, comm=comm,
    )  # fmt: skip
    options = SolverOptions(args.solver, args.time_limit, args.gap)
    if dataset is not None:
        from llmpq.planner.dataset import plan_dataset

        plan = plan_dataset(problem, dataset, args.method, options)
    else:
        plan = make_plan(problem, args.method, options)
    check_plan(plan, cluster)
    save_plan(plan, args.out)
    s, pred = plan.solver, plan.predicted
    gap = f", gap {s.gap:.2%}" if s.gap is not None else ""
    idle = (f" ({', '.join(d.device for d in plan.idle_devices)} idle: see idle_devices)"
            if plan.idle_devices else "")  # fmt: skip
    if plan.dataset is not None:
        d = plan.dataset
        pred = type(pred)(0.0, 0.0, d.predicted["makespan_s"], d.predicted["tokens_per_s"])
        idle += (f", {d.concurrency} in flight for {d.prompts} prompts (weighed "
                 f"{[c['concurrency'] for c in d.candidates]})")  # fmt: skip
    print(
        f"{plan.method}: {len(plan.stages)} stages{idle}, bits {sorted(set(plan.bits_per_layer()))}, "
        f"micro-batches {plan.micro_batch.prefill_size}/{plan.micro_batch.decode_size}"
        f"x{plan.micro_batch.decode_count}; predicted {pred.tokens_per_s:.2f} tokens/s "
        f"({pred.makespan_s:.2f} s); {s.status}{gap} in {s.seconds:.2f} s -> {args.out}"
    )
    return 0
