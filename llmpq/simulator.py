"""Event-driven simulation of a plan's schedule: makespan, tokens/s, busy time, bubbles, memory.

Usage::

    from llmpq.simulator import simulate, problem_for_plan

    problem = problem_for_plan(plan, cluster, costs_dir="results/costs")
    sim = simulate(plan, problem)
    sim.makespan_s, sim.tokens_per_s, sim.stages[0].busy_s, sim.stages[0].bubble_fraction
    sim.to_dict()        # what ``llmpq simulate`` writes

The schedule is the runtime's (:mod:`llmpq.runtime`): prompts in ``ceil(B / prefill_size)``
prefill micro-batches of consecutive prompts flow through the stages; the last stage samples
and sends token ids back to the first (the ring); once every prompt is prefilled, the batch is
regrouped into ``decode_count`` micro-batches of ``decode_size`` that circulate for
``gen_len − 1`` steps. Every stage computes one item at a time in arrival order; every link
carries one transfer at a time, overlapping the sender's next computation. Items keep the
same order at every stage (prefill micro-batch p, then decode (step s, micro-batch k) in
lexicographic order), so the simulation walks the items in that order and tracks, per stage
and per link, when it becomes free — an exact event simulation of this FIFO network. Unlike
the closed form (:mod:`llmpq.planner.time_model`) it prices each micro-batch at its real size
(the last may be smaller) and each decode step at its context, and needs no regime algebra.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llmpq.cluster import Cluster
from llmpq.costmodel.comm import CommFit
from llmpq.costmodel.model import DEFAULT_COSTS_DIR, CostModel
from llmpq.plan import MicroBatch, Plan
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.time_model import peak_memory_bytes, stage_coefficients


@dataclass(frozen=True)
class StageSim:
    device: str
    busy_s: float
    prefill_busy_s: float
    decode_busy_s: float
    bubble_fraction: float  # idle share of the makespan
    peak_memory_bytes: int


@dataclass(frozen=True)
class SimResult:
    makespan_s: float
    prefill_s: float
    decode_s: float
    tokens_per_s: float
    stages: tuple[StageSim, ...]

    def to_dict(self) -> dict:
        return asdict(self) | {"stages": [asdict(s) for s in self.stages]}


def problem_for_plan(
    plan: Plan, cluster: Cluster, costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
    comm: CommFit | None = None,
) -> PlanningProblem:  # fmt: skip
    """The pricing inputs of ``plan`` (ω is not needed to simulate: zeros)."""
    plan.check_against(cluster)
    spec = plan.model_shape
    costs = {d.type.name: CostModel.for_device(d.type, spec, costs_dir) for d in cluster.devices}
    omega = np.zeros((spec.num_layers, len(BITS)))
    return PlanningProblem(plan.model_id, spec, cluster, plan.workload, costs, omega, comm)


def _sizes(total: int, size: int) -> list[int]:
    count = math.ceil(total / size)
    return [min(size, total - i * size) for i in range(count)]


def simulate(plan: Plan, problem: PlanningProblem) -> SimResult:
    """Play the plan's schedule (see the module docstring)."""
    cluster, w, mb = problem.cluster, problem.workload, plan.micro_batch
    devices = [cluster.device(s.device) for s in plan.stages]
    n = len(devices)
    cols = [[BITS.index(b) for b in s.bits] for s in plan.stages]
    memo: dict = {}

    def coef(j: int, prefill_size: int, decode_size: int):
        key = (j, prefill_size, decode_size)
        if key not in memo:
            c = stage_coefficients(
                problem, devices[j], MicroBatch(prefill_size, decode_size, 1),
                is_first=j == 0, is_last=j == n - 1, next_device=devices[(j + 1) % n],
                memory=False,
            )  # fmt: skip
            prefill = c.prefill.fixed_ms + sum(c.prefill.layer_ms[k] for k in cols[j])
            decode = c.decode.fixed_ms + sum((c.decode.layer_ms[k] for k in cols[j]), 0.0)
            memo[key] = (prefill, np.asarray(decode), c.prefill.send_ms, c.decode.send_ms)
        return memo[key]

    stage_free = np.zeros(n)
    link_free = np.zeros(n)
    busy_p, busy_d = np.zeros(n), np.zeros(n)

    def through(j: int, ready: float, compute_ms: float, send_ms: float) -> tuple[float, float]:
        start = max(ready, stage_free[j])
        end = start + compute_ms
        stage_free[j] = end
        sent = max(end, link_free[j]) + send_ms
        link_free[j] = sent
        return end, sent

    prefill_sizes = _sizes(w.batch_size, mb.prefill_size)
    decode_sizes = _sizes(w.batch_size, mb.decode_size)
    prefill_end = 0.0
    for size in prefill_sizes:
        ready = 0.0
        for j in range(n):
            t, _, c, _ = coef(j, size, decode_sizes[0])
            busy_p[j] += t
            _, ready = through(j, ready, t, c)
        prefill_end = max(prefill_end, ready)

    steps = w.gen_len - 1
    ring = [prefill_end] * len(decode_sizes)
    finish = prefill_end
    for s in range(steps):
        for k, size in enumerate(decode_sizes):
            ready = ring[k]
            for j in range(n):
                _, t, _, c = coef(j, prefill_sizes[0], size)
                busy_d[j] += t[s]
                end, ready = through(j, ready, float(t[s]), c)
            ring[k] = ready
            finish = max(finish, end)  # the last stage's sampling ends the step
    makespan_ms = finish if steps else prefill_end
    peak = peak_memory_bytes(
        problem, list(zip(devices, [s.bits for s in plan.stages], strict=True)), mb
    )
    stages = tuple(
        StageSim(
            devices[j].name,
            float(busy_p[j] + busy_d[j]) / 1e3,
            float(busy_p[j]) / 1e3,
            float(busy_d[j]) / 1e3,
            1.0 - float(busy_p[j] + busy_d[j]) / makespan_ms if makespan_ms > 0 else 0.0,
            peak[devices[j].name],
        )  # fmt: skip
        for j in range(n)
    )
    makespan_s = makespan_ms / 1e3
    return SimResult(
        makespan_s, prefill_end / 1e3, (makespan_ms - prefill_end) / 1e3,
        w.batch_size * w.gen_len / makespan_s if makespan_s > 0 else float("inf"), stages,
    )  # fmt: skip
