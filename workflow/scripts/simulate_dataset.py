"""Snakemake script of rule simulate_dataset: a plan's dataset schedule on the dataset
workload's lengths, slots refilled and one batch at a time."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import no_plan_passed_on, run_logged  # noqa: E402

from llmpq.cluster import load_cluster  # noqa: E402
from llmpq.dataset_workload import length_summary, load_dataset_workload  # noqa: E402
from llmpq.files import write_json_atomic  # noqa: E402
from llmpq.plan import load_plan  # noqa: E402
from llmpq.simulator import problem_for_plan, simulate_dataset  # noqa: E402

sm = snakemake  # noqa: F821


def sim():
    if no_plan_passed_on(sm.input.plan, sm.output.sim):
        return
    plan = load_plan(sm.input.plan)
    problem = problem_for_plan(plan, load_cluster(sm.input.cluster), sm.params.costs_dir)
    dataset = load_dataset_workload(sm.input.dataset)
    refill = simulate_dataset(plan, problem, dataset)
    one = simulate_dataset(plan, problem, dataset, refill=False)
    write_json_atomic(sm.output.sim, {
        "plan": sm.input.plan, "method": plan.method, "dataset": dataset.name,
        "prompts": dataset.count, "prompt_lens": length_summary(dataset.prompt_lens),
        "prompt_len_histogram": dataset.histogram("prompt_lens"),
        "refill": refill.to_dict(), "one_batch": one.to_dict(),
    })  # fmt: skip
    print(f"{plan.method}: {refill.tokens_per_s:.1f} tokens/s refilled, "
          f"{one.tokens_per_s:.1f} one batch at a time")  # fmt: skip


run_logged(sm.log[0], sim)
