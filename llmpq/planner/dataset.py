"""Planning for a dataset: the concurrency is a decision, jointly with partition, bits, micro-batches.

Usage::

    from llmpq.planner.dataset import plan_dataset

    plan = plan_dataset(problem, dataset, "llmpq", options)    # problem's workload is ignored
    plan.dataset.concurrency, plan.dataset.predicted["makespan_s"], plan.dataset.candidates

More sequences in flight raise decode throughput (a decode step's weights are read once for
more rows) until the KV cache no longer fits; on a CPU the step's compute grows with the rows
too, so the best concurrency is where the dataset's makespan is least, not the largest that
fits. For each candidate concurrency ``C`` (powers of two up to the dataset's size) the planner
solves the whole problem — partition, bits, micro-batches with ``decode_size × decode_count ≥
C`` — priced at the dataset's mean prompt length and output limit
(:meth:`~llmpq.dataset_workload.DatasetWorkload.time_shape`) and with memory checked with every
slot at the longest prompt plus limit (``memory_shape``); the event simulator then plays that
plan's dataset schedule (:func:`~llmpq.simulator.simulate_dataset`, the schedule the runtime
runs: refill, length-grouped admission, the draining tail), and the plan with the least
``makespan_ms + θ·Σω`` wins (under a Σω budget every candidate meets it: the least makespan).
Growing ``C`` stops once it no longer fits, or after two candidates in a row that did worse.
The record also carries the closed form's steady-state makespan
(:func:`~llmpq.planner.time_model.dataset_makespan_s`: no draining tail) beside the simulated
one. On more than :data:`RANK_SAMPLE` requests the candidates are ranked on an evenly spaced sample
of them (its makespan scaled to the whole), and the winner is simulated on all.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from llmpq.dataset_workload import DatasetWorkload
from llmpq.errors import UserError
from llmpq.plan import DatasetRecord, Plan
from llmpq.planner.ilp import DEFAULT_SOLVER, SolverOptions
from llmpq.planner.problem import PlanningProblem

RANK_SAMPLE = 2000  # requests the candidates are ranked on
MAX_CONCURRENCY = 512


def concurrency_candidates(count: int, largest: int = MAX_CONCURRENCY) -> list[int]:
    """1, 2, 4, ... up to the dataset's size (and the size itself below ``largest``)."""
    top = min(count, largest)
    out = [2**k for k in range(top.bit_length()) if 2**k <= top]
    return out + ([top] if top not in out else [])


def _sample(dataset: DatasetWorkload) -> tuple[DatasetWorkload, float]:
    if dataset.count <= RANK_SAMPLE:
        return dataset, 1.0
    idx = np.linspace(0, dataset.count - 1, RANK_SAMPLE).round().astype(int)
    sub = DatasetWorkload.of(dataset.name, dataset.prompt_lens[idx], dataset.max_new_tokens[idx])
    return sub, dataset.max_new_tokens.sum() / sub.max_new_tokens.sum()


def plan_dataset(
    problem: PlanningProblem,
    dataset: DatasetWorkload,
    method: str = "llmpq",
    options: SolverOptions = DEFAULT_SOLVER,
    concurrencies: list[int] | None = None,
) -> Plan:
    """The plan of ``method`` that serves all of ``dataset`` soonest (see the module notes)."""
    from llmpq.planner import make_plan
    from llmpq.simulator import simulate_dataset

    ranked_on, scale = _sample(dataset)
    tried, best, worse, last_error = [], None, 0, None
    for C in concurrencies or concurrency_candidates(dataset.count):
        sub = replace(problem, workload=dataset.time_shape(C),
                      memory_workload=dataset.memory_shape(C))  # fmt: skip
        try:
            plan = make_plan(sub, method, options)
        except UserError as err:  # nothing fits at this concurrency: larger ones fit less
            last_error = err
            tried.append({"concurrency": C, "fits": False})
            break
        sim = simulate_dataset(plan, sub, ranked_on)
        makespan_s = sim.makespan_s * scale
        score = makespan_s * 1e3 + problem.theta * plan.quality.sum_omega
        tried.append({"concurrency": C, "fits": True, "makespan_s": makespan_s,
                      "tokens_per_s": dataset.generated_tokens / makespan_s,
                      "sum_omega": plan.quality.sum_omega,
                      "micro_batch": [plan.micro_batch.prefill_size, plan.micro_batch.decode_size,
                                      plan.micro_batch.decode_count]})  # fmt: skip
        if best is None or score < best[0]:
            best, worse = (score, C, plan, sub), 0
        else:
            worse += 1
            if worse == 2:
                break
    if best is None:
        raise last_error or UserError("dataset", dataset.name, "give at least one request")
    _, C, plan, sub = best
    sim = simulate_dataset(plan, sub, dataset)
    from llmpq.planner.time_model import dataset_makespan_s

    stages = [(sub.cluster.device(s.device), s.bits) for s in plan.stages]
    steady_s = dataset_makespan_s(sub, stages, plan.micro_batch, dataset.prompt_lens,
                                  dataset.max_new_tokens)  # fmt: skip
    record = DatasetRecord(
        source=dataset.name, prompts=dataset.count,
        prompt_lens=dataset.histogram("prompt_lens"),
        max_new_tokens=dataset.histogram("max_new_tokens"),
        concurrency=plan.micro_batch.decode_size * plan.micro_batch.decode_count,
        predicted={"makespan_s": sim.makespan_s, "tokens_per_s": sim.tokens_per_s,
                   "generated_tokens": sim.generated_tokens,
                   "steady_state_makespan_s": steady_s},
        memory_shape={k: v for k, v in sub.memory_shape.to_dict().items() if k != "name"},
        candidates=tried,
    )  # fmt: skip
    return replace(plan, dataset=record)
