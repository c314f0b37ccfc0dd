"""Snakemake script of rule plan_dataset: llmpq's plan for the requests file (the concurrency
chosen by the planner), or a record that no plan fits."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.cluster import load_cluster  # noqa: E402
from llmpq.dataset_workload import requests_workload  # noqa: E402
from llmpq.errors import UserError  # noqa: E402
from llmpq.files import write_json_atomic  # noqa: E402
from llmpq.indicator import load_indicator  # noqa: E402
from llmpq.plan import save_plan  # noqa: E402
from llmpq.planner import SolverOptions, planning_problem  # noqa: E402
from llmpq.planner.check import check_plan  # noqa: E402
from llmpq.planner.dataset import plan_dataset  # noqa: E402
from llmpq.report import NO_PLAN_FIELDS, no_plan_record  # noqa: E402

sm = snakemake  # noqa: F821


def plan():
    cluster = load_cluster(sm.input.cluster)
    dataset = requests_workload(sm.input.prompts, sm.params.model, sm.params.max_new_tokens)
    problem = planning_problem(
        sm.params.model, cluster, dataset.time_shape(1), costs_dir=sm.params.costs_dir,
        indicator=load_indicator(sm.input.indicator), **sm.params.target,
    )  # fmt: skip
    options = SolverOptions(sm.params.solver, sm.params.time_limit_s, sm.params.gap)
    try:
        found = plan_dataset(problem, dataset, "llmpq", options)
    except UserError as err:
        if err.field not in NO_PLAN_FIELDS:
            raise
        write_json_atomic(sm.output.plan, no_plan_record("llmpq", cluster.name, err))
        print(f"no plan: {err}")
        return
    check_plan(found, cluster)
    save_plan(found, sm.output.plan)
    d = found.dataset
    print(f"llmpq: {d.concurrency} in flight for {d.prompts} requests, "
          f"{d.predicted['tokens_per_s']:.2f} tokens/s predicted")  # fmt: skip


run_logged(sm.log[0], plan)
