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


# ------------------------------------------------------------------------- the dataset schedule
@dataclass(frozen=True)
class DatasetSim:
    """The dataset schedule played out: every request of the dataset, slots refilled."""

    makespan_s: float
    tokens_per_s: float
    generated_tokens: int
    prompts: int
    concurrency: int
    refill: bool
    stages: tuple[StageSim, ...]

    def to_dict(self) -> dict:
        return asdict(self) | {"stages": [asdict(s) for s in self.stages]}


class _StagePrices:
    """One stage's compute and send time for a micro-batch of ``rows`` sequences over
    ``length`` tokens (prefill: the padded prompt; decode: the cached context), memoized."""

    def __init__(self, plan: Plan, problem: PlanningProblem) -> None:
        from llmpq.costmodel.comm import link_transfer_ms
        from llmpq.planner.time_model import send_bytes

        self.problem, self.link, self.send_bytes = problem, link_transfer_ms, send_bytes
        self.devices = [problem.cluster.device(s.device) for s in plan.stages]
        self.bits = [{b: s.bits.count(b) for b in set(s.bits)} for s in plan.stages]
        self.memo: dict = {}

    def __call__(self, j: int, phase: str, rows: int, length: int) -> tuple[float, float]:
        key = (j, phase, rows, length)
        if key not in self.memo:
            n, device = len(self.devices), self.devices[j]
            cm = self.problem.cost(device)
            layer = cm.prefill_layer_ms if phase == "prefill" else cm.decode_layer_ms
            ms = float(cm.stage_overhead_ms(phase, rows, length))
            ms += sum(c * float(layer(b, rows, length)) for b, c in self.bits[j].items())
            if j == 0:
                ms += float(cm.embed_ms(phase, rows, length))
            if j == n - 1:
                ms += float(cm.head_ms(phase, rows, length))
            tokens = length if phase == "prefill" else 1
            sent = self.link(self.problem.cluster, device, self.devices[(j + 1) % n],
                             self.send_bytes(self.problem, rows, tokens, j == n - 1),
                             self.problem.comm)  # fmt: skip
            self.memo[key] = (ms, float(sent))
        return self.memo[key]


def simulate_dataset(
    plan: Plan,
    problem: PlanningProblem,
    dataset,
    *,
    refill: bool = True,
    output_lens=None,
) -> DatasetSim:
    """Play the runtime's dataset schedule (:mod:`llmpq.runtime.continuous`) event by event:
    the first stage admits requests through the same window, every group's decode
    micro-batch and admit micro-batches travel the ring FIFO (every stage and link one item at a
    time, as in :func:`simulate`), each decode step priced at its group's rows and padded
    context, each admit at its rows and padded prompt. ``output_lens`` (default: each request's
    limit) are the tokens each request generates; give the measured ones to replay a run."""
    import heapq
    from collections import deque

    from llmpq.admission import Slots, Window, lookahead_of

    mb = plan.micro_batch
    slots = Slots(mb.prefill_size, mb.decode_size, mb.decode_count)
    price = _StagePrices(plan, problem)
    n = len(plan.stages)
    p = np.asarray(dataset.prompt_lens).tolist()  # Python numbers: ~3x faster than numpy here
    out = np.asarray(dataset.max_new_tokens if output_lens is None else output_lens)
    out = np.minimum(out, dataset.max_new_tokens).tolist()
    stage_free, link_free = [0.0] * n, [0.0] * n
    busy_p, busy_d = [0.0] * n, [0.0] * n
    replies: list = []  # (arrival at stage 0, order, group, rows of the item)
    order = 0

    def send(g: int, phase: str, rows: list, length: int, ready: float) -> None:
        nonlocal order
        for j in range(n):
            compute, transfer = price(j, phase, len(rows), length)
            (busy_p if phase == "prefill" else busy_d)[j] += compute
            start = max(ready, stage_free[j])
            stage_free[j] = start + compute
            ready = max(stage_free[j], link_free[j]) + transfer
            link_free[j] = ready
        heapq.heappush(replies, (ready, order, g, rows))
        order += 1

    window = Window(iter(range(len(p))), lookahead_of(slots), length=p.__getitem__)
    groups: list[list[list[int]]] = [[] for _ in range(slots.decode_count)]  # [req, made, cached]
    awaiting = [deque() for _ in range(slots.decode_count)]

    def advance(g: int, take: int, now: float) -> None:
        """The runtime's ``ContinuousPipeline._advance``: a decode micro-batch of the group's
        rows (one that ended is computed once more unless dropped), newcomers into the slots
        of ended rows first; ended rows with no newcomer to take them are dropped."""
        rows = groups[g]
        dead = [i for i, r in enumerate(rows) if r[1] >= out[r[0]]]
        free = len(dead) + slots.decode_size - len(rows)
        newcomers = window.take(min(take, free)) if take else []
        if dead and not newcomers:
            rows = [r for r in rows if r[1] < out[r[0]]]
        if not rows and not newcomers:
            return
        if any(r[1] < out[r[0]] for r in rows):
            send(g, "decode", rows, max(r[2] for r in rows), now)
            for r in rows:
                r[2] += 1
            awaiting[g].append([r for r in rows if r[1] < out[r[0]]])
        rows = list(rows)
        for k in range(0, len(newcomers), slots.prefill_size):
            chunk = [[i, 0, p[i]] for i in newcomers[k : k + slots.prefill_size]]
            send(g, "prefill", chunk, max(r[2] for r in chunk), now)
            awaiting[g].append(chunk)
            for r in chunk:
                if dead:
                    rows[dead.pop(0)] = r
                else:
                    rows.append(r)
        groups[g] = rows

    now = 0.0
    while True:
        if not any(awaiting):
            for g in range(slots.decode_count):
                advance(g, slots.decode_size, now)
            if not any(awaiting):
                break
        now, _, g, rows = heapq.heappop(replies)
        for r in awaiting[g].popleft():
            r[1] += 1
        if awaiting[g]:
            continue
        live = sum(r[1] < out[r[0]] for r in groups[g])
        advance(g, slots.decode_size - live if refill else 0, now)
    makespan_s = now / 1e3
    peak = peak_memory_bytes(
        problem, list(zip(price.devices, [s.bits for s in plan.stages], strict=True)), mb
    )
    stages = tuple(
        StageSim(
            price.devices[j].name,
            float(busy_p[j] + busy_d[j]) / 1e3,
            float(busy_p[j]) / 1e3,
            float(busy_d[j]) / 1e3,
            1.0 - float(busy_p[j] + busy_d[j]) / now if now > 0 else 0.0,
            peak[price.devices[j].name],
        )  # fmt: skip
        for j in range(n)
    )
    generated = int(sum(out))
    return DatasetSim(makespan_s, generated / makespan_s if makespan_s > 0 else float("inf"),
                      generated, len(p), slots.concurrency, refill, stages)  # fmt: skip
