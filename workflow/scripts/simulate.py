"""Snakemake script of rule simulate: a plan's schedule played event by event."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import no_plan_passed_on, run_logged  # noqa: E402

from llmpq.cluster import load_cluster  # noqa: E402
from llmpq.files import write_json_atomic  # noqa: E402
from llmpq.plan import load_plan  # noqa: E402
from llmpq.simulator import problem_for_plan, simulate  # noqa: E402

sm = snakemake  # noqa: F821


def sim():
    if no_plan_passed_on(sm.input.plan, sm.output.sim):
        return
    plan = load_plan(sm.input.plan)
    result = simulate(
        plan, problem_for_plan(plan, load_cluster(sm.input.cluster), sm.params.costs_dir)
    )
    write_json_atomic(
        sm.output.sim, result.to_dict() | {"plan": sm.input.plan, "method": plan.method}
    )


run_logged(sm.log[0], sim)
