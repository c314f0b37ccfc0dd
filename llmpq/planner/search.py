"""The outer search: every device subset, order and micro-batch choice, best first, certified.

Usage::

    from llmpq.planner.search import search

    found = search(problem, SolverOptions(time_limit_s=10, gap=0.01), starts=[baseline_plan])
    found.best.stages, found.best.micro_batch, found.best.value   # the closed form's value
    found.objective, found.bound, found.gap     # proven for the closed form, over the whole space
    found.idle                                   # devices the plan leaves out, and why

What is searched: every nonempty subset of the devices in every distinct pipeline order
(:func:`~llmpq.planner.candidates.device_orders`), every contiguous split with at least one
layer per used device, every allowed bitwidth per layer, every micro-batch choice of
:func:`~llmpq.planner.candidates.micro_batches`. What is minimised: the closed form
(:func:`~llmpq.planner.time_model.evaluate_stages`: makespan in ms, plus θ·Σω) under the
exact memory model and the Σω budget. The reported objective *is* that closed form of the
returned plan, and the bound is a lower bound of it over the whole space.

How: one candidate per (order class, micro-batch choice). Every candidate starts with a cheap
lower bound — a prefill LP (depends on the prefill size) plus a decode LP (depends on the
decode choice), batched (:mod:`llmpq.planner.bounds`) — and is refined, best bound first,
through: its slim joint LP (batched); its formulation's LP; its ILP with coarse decode segments
(a lower bound, since a segment's max of sums never exceeds the sum of maxes; its solution is a
real plan, priced by the closed form), solved again with the segments split wherever that
solution changes regime inside one, until it does not (then the ILP's value of it is the closed
form); and, with layer-specific ω, the exact layer assignment of each order of the class (the
class's ILP assigns bits to layers without positions: a bound for all of them). The incumbent
is the ILP's cutoff: a candidate that cannot beat it is closed with the cutoff as its bound. Each refinement raises
the candidate's bound; the search stops when the least bound left is within the gap target of
the best plan found — then every candidate is proven unable to beat it by more than the gap —
or at the time limit, with the honest gap (classes never bounded count with bound 0).

Plans given as ``starts`` (the baselines) enter as incumbents when they meet the target, so the
search never returns worse than them.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.errors import UserError
from llmpq.plan import IdleDevice, MicroBatch, Plan
from llmpq.planner.bounds import PhaseBlock, phase_bounds
from llmpq.planner.candidates import device_kind, device_orders, micro_batches, order_classes
from llmpq.planner.formulation import decode_segments, formulate, split_segments
from llmpq.planner.ilp import (
    DEFAULT_SOLVER,
    Solution,
    SolverOptions,
    build_model,
    solve,
    warm_start,
)
from llmpq.planner.instance import Instance, instance_for
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.time_model import (
    PhaseCoefficients,
    StageCoefficients,
    evaluate_stages,
    memory_coefficients,
    phase_coefficients,
)

COARSE_SEGMENTS = 8  # decode segments of the first ILP of a candidate
JOINT_BATCH = 64  # candidates whose joint LPs are solved together


@dataclass(frozen=True)
class Incumbent:
    """A plan found: its used devices in pipeline order with their layers' bits, the
    micro-batches, and its value under the closed form (ms + θ·Σω)."""

    stages: tuple[tuple[ClusterDevice, tuple[int, ...]], ...]
    micro_batch: MicroBatch
    value: float
    source: str  # "ilp" or the baseline's name

    @property
    def order(self) -> tuple[ClusterDevice, ...]:
        return tuple(d for d, _ in self.stages)

    @property
    def bits_per_layer(self) -> tuple[int, ...]:
        return tuple(b for _, bits in self.stages for b in bits)


def closed_form_value(
    problem: PlanningProblem, stages: Sequence[tuple[ClusterDevice, Sequence[int]]],
    micro_batch: MicroBatch,
) -> float:  # fmt: skip
    """What the search minimises: makespan (ms) + θ·Σω; inf if a stage does not fit its
    device or the Σω budget is broken."""
    ev = evaluate_stages(problem, stages, micro_batch)
    if not ev.fits:
        return math.inf
    if problem.omega_budget is not None and ev.sum_omega > problem.omega_budget * (1 + 1e-9):
        return math.inf
    return ev.makespan_s * 1e3 + problem.theta * ev.sum_omega


def incumbent_of(
    problem: PlanningProblem, stages: Sequence[tuple[ClusterDevice, Sequence[int]]],
    micro_batch: MicroBatch, source: str,
) -> Incumbent:  # fmt: skip
    """Used stages only (a stage without layers is dropped), priced by the closed form."""
    used = tuple((d, tuple(int(b) for b in bits)) for d, bits in stages if len(bits))
    return Incumbent(used, micro_batch, closed_form_value(problem, used, micro_batch), source)


@dataclass(frozen=True)
class SearchResult:
    best: Incumbent
    objective: float  # the closed form of the best plan
    bound: float  # a lower bound of the closed form over the whole search space
    gap: float
    status: str  # OPTIMAL (gap target proven) | FEASIBLE (time limit)
    seconds: float
    space: str  # the search space the certificate covers
    candidates: int
    solved: int
    idle: tuple[IdleDevice, ...] = field(default=())


class CoefficientCache:
    """Memo of the per-phase coefficients by (device, phase, size, ends, next device). They do
    not depend on the quality target, so one cache serves every θ or budget of a problem
    (:meth:`PlanningProblem.with_quality`) — what an interactive θ slider needs."""

    def __init__(self, problem: PlanningProblem) -> None:
        self.problem, self.memo, self.memory = problem, {}, {}

    def serves(self, problem: PlanningProblem) -> bool:
        a, b = self.problem, problem
        return a is b or (a.spec == b.spec and a.cluster == b.cluster and a.workload == b.workload
                          and a.comm == b.comm and dict(a.costs) == dict(b.costs))  # fmt: skip

    def phase_memory(self, device, phase: str, size: int, first: bool, last: bool) -> tuple:
        """``(layer_bytes, base_bytes, held_bytes)`` at this position (the next device aside)."""
        key = (device_kind(device), phase, size, first, last)
        if key not in self.memory:
            self.memory[key] = memory_coefficients(
                self.problem, device, phase, size, is_first=first, is_last=last
            )
        return self.memory[key]

    def phase(
        self, device, phase: str, size: int, first: bool, last: bool, nxt
    ) -> PhaseCoefficients:
        key = (device.name, phase, size, first, last, nxt.name)
        if key not in self.memo:
            self.memo[key] = phase_coefficients(
                self.problem, device, phase, size, next_device=nxt, is_first=first, is_last=last,
                memory=self.phase_memory(device, phase, size, first, last),
            )  # fmt: skip
        return self.memo[key]

    def __call__(self, device, mb, first, last, nxt):
        return StageCoefficients(
            self.phase(device, "prefill", mb.prefill_size, first, last, nxt),
            self.phase(device, "decode", mb.decode_size, first, last, nxt),
            device.memory_bytes,
        )


# --------------------------------------------------------------------------- the candidates
SPLIT, SLIM, LP, ILP, MEMBER, DONE = range(6)  # refinement levels of a candidate


@dataclass
class _Candidate:
    cls: int  # order class
    mb: MicroBatch
    level: int
    bound: float
    segments: tuple = ()  # the decode segments of its formulation
    member: int = 0  # the order of the class (MEMBER level)
    start: tuple | None = None  # (counts, bits) of its last solution: a warm start
    kinds: Counter = field(default_factory=Counter)  # devices used per kind


@dataclass
class _Search:
    problem: PlanningProblem
    options: SolverOptions
    coef: CoefficientCache
    classes: list
    deadline: float
    pool: list = field(default_factory=list)  # Incumbents
    closed: list = field(default_factory=list)  # candidates refined to the end
    solved: int = 0
    timed_out: bool = False

    @property
    def best_value(self) -> float:
        return min((p.value for p in self.pool), default=math.inf)

    def instance(self, c: _Candidate) -> Instance:
        return instance_for(self.problem, self.classes[c.cls][c.member], c.mb, self.coef)

    def offer(self, order, mb: MicroBatch, sol: Solution) -> None:
        """A solved ILP's plan, priced by the closed form, into the pool."""
        stages = list(zip(order, sol.stage_bits(), strict=True))
        found = incumbent_of(self.problem, stages, mb, "ilp")
        if math.isfinite(found.value):
            self.pool.append(found)

    def solve(self, c: _Candidate, inst: Instance, layers: str, cutoff: float) -> Solution | None:
        """The candidate's ILP; solutions at or above ``cutoff`` cannot win and are cut off
        (then the solver reports INFEASIBLE: the candidate's bound is the cutoff)."""
        remaining = self.deadline - time.perf_counter()
        if remaining <= 0.05:
            self.timed_out = True
            return None
        form = formulate(inst, c.segments, layers)
        model, x = build_model(form, self.options)
        if math.isfinite(cutoff):
            model.cutoff = cutoff
        if c.start is not None:
            warm_start(model, x, form, *c.start)
        sol = solve(model, x, form, self.options, time_limit_s=remaining)
        self.solved += 1
        if sol.status not in ("OPTIMAL", "INFEASIBLE", "INT_INFEASIBLE"):
            self.timed_out = True  # stopped by the time limit: the candidate's bound stays
        return sol

    def refine(self, c: _Candidate) -> list[_Candidate]:
        """One step of refinement; the candidate(s) it becomes (empty: infeasible)."""
        inst = self.instance(c)
        if c.level == SLIM:  # the formulation's own LP
            bound = formulate(inst, c.segments, "relaxed").lp_bound()
            return [_next(c, LP, max(bound, c.bound))] if math.isfinite(bound) else []
        cutoff = self.best_value * (1 - self.options.gap)
        sol = self.solve(c, inst, "exact" if c.level == MEMBER else "relaxed", cutoff)
        if sol is None:
            return [c]
        if sol.status in ("INFEASIBLE", "INT_INFEASIBLE"):  # nothing below the cutoff
            return [_next(c, DONE, cutoff)] if math.isfinite(cutoff) else []
        bound = max(c.bound, sol.bound) if sol.bound is not None else c.bound
        if sol.found:
            self.offer(inst.devices, c.mb, sol)
            c.start = (sol.counts, sol.bits_per_layer)
        level = ILP if c.level == LP else c.level
        if self.timed_out or not sol.found:
            return [_next(c, level, bound)]
        finer = split_segments(c.segments, inst.regimes(sol.counts))
        if finer != c.segments:  # the solution changes regime inside a segment: not yet exact
            return [_next(c, level, bound, segments=finer)]
        if level == ILP and inst.per_layer:  # the exact layer assignment, order by order
            return [_next(c, MEMBER, bound, member=m, start=c.start if m == 0 else None)
                    for m in range(len(self.classes[c.cls]))]  # fmt: skip
        return [_next(c, DONE, bound)]


def _next(c: _Candidate, level: int, bound: float, **changes) -> _Candidate:
    out = _Candidate(c.cls, c.mb, level, bound, c.segments, c.member, c.start, c.kinds)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def _start_stages(plan: Plan, problem: PlanningProblem):
    return [(problem.cluster.device(s.device), s.bits) for s in plan.stages]


def search(
    problem: PlanningProblem,
    options: SolverOptions = DEFAULT_SOLVER,
    *,
    starts: Sequence[Plan] = (),
    orders: Sequence[tuple[ClusterDevice, ...]] | None = None,
    choices: Sequence[MicroBatch] | None = None,
    cache: CoefficientCache | None = None,
) -> SearchResult:
    """Best plan over device subsets × orders × micro-batches (see the module docstring)."""
    clock = time.perf_counter()
    coef = cache if cache is not None and cache.serves(problem) else CoefficientCache(problem)
    usable = [d for d in problem.cluster.devices if problem.allowed_bits(d)]
    space = "the given orders"
    if orders is None:
        orders, space = device_orders(problem.cluster, devices=usable,
                                      max_devices=problem.num_layers)  # fmt: skip
    classes = order_classes(problem.cluster, list(orders), problem.comm)
    choices = list(choices) if choices is not None else micro_batches(
        problem.workload, len(problem.cluster.devices)
    )  # fmt: skip
    s = _Search(problem, options, coef, classes, clock + options.time_limit_s)
    for plan in starts:
        found = incumbent_of(problem, _start_stages(plan, problem), plan.micro_batch, plan.method)
        if math.isfinite(found.value):
            s.pool.append(found)

    # the first bounds, by phase: one LP per (class, prefill size) and per (class, decode choice)
    prefill_sizes = sorted({c.prefill_size for c in choices})
    decode_choices = sorted({(c.decode_size, c.decode_count) for c in choices})
    heap: list = []
    unbounded = 0
    blocks: dict = {}  # (class, "prefill", size) or (class, "decode", (size, count)) -> block
    for ci, members in enumerate(classes):
        if time.perf_counter() > s.deadline:
            unbounded = len(classes) - ci
            s.timed_out = True
            break
        order = members[0]
        for p in prefill_sizes:
            blocks[ci, "prefill", p] = PhaseBlock.prefill(problem, coef, order, p)
        for d in decode_choices:
            blocks[ci, "decode", d] = PhaseBlock.decode(problem, coef, order, *d)
    values = dict(zip(blocks, phase_bounds(list(blocks.values())), strict=True))
    coarse = decode_segments(problem.workload.gen_len - 1, COARSE_SEGMENTS)
    for ci in sorted({key[0] for key in blocks}):
        kinds = Counter(device_kind(d) for d in classes[ci][0])
        for mb in choices:
            lb = values[ci, "prefill", mb.prefill_size]
            lb += values[ci, "decode", (mb.decode_size, mb.decode_count)]
            if math.isfinite(lb):
                cand = _Candidate(ci, mb, SPLIT, lb, coarse, kinds=kinds)
                heapq.heappush(heap, (lb, len(heap), cand))
    candidates = len(heap)
    if not heap and not s.pool and not s.timed_out:
        raise _infeasible(problem, coef, choices)

    seq = candidates
    while heap:
        lb, _, c = heap[0]
        threshold = s.best_value * (1 - options.gap)
        if lb >= threshold or s.timed_out:
            break
        if c.level == SPLIT:  # the slim joint LPs of the next candidates, in one batch
            batch = []
            while heap and heap[0][2].level == SPLIT and heap[0][0] < threshold:
                batch.append(heapq.heappop(heap)[2])
                if len(batch) == JOINT_BATCH:
                    break
            joint = [PhaseBlock.joint(blocks[c.cls, "prefill", c.mb.prefill_size],
                                      blocks[c.cls, "decode", (c.mb.decode_size, c.mb.decode_count)])
                     for c in batch]  # fmt: skip
            for c, lb in zip(batch, phase_bounds(joint), strict=True):
                if math.isfinite(lb):
                    seq += 1
                    heapq.heappush(heap, (max(lb, c.bound), seq, _next(c, SLIM, max(lb, c.bound))))
            continue
        heapq.heappop(heap)
        for nxt in s.refine(c):
            if nxt.level == DONE:
                s.closed.append(nxt)
            else:
                seq += 1
                heapq.heappush(heap, (nxt.bound, seq, nxt))
    if not s.pool:
        if s.timed_out:
            raise UserError(
                "time limit", f"{options.time_limit_s} s", "raise it (--time-limit)",
                problem="ended before any plan was found",
            )  # fmt: skip
        raise _infeasible(problem, coef, choices)
    best = min(s.pool, key=lambda p: (p.value, -len(p.stages)))
    value = best.value
    open_bounds = [e[0] for e in heap] + [c.bound for c in s.closed] + ([0.0] if unbounded else [])
    bound = min(open_bounds + [value])
    gap = max(0.0, (value - bound) / max(abs(value), 1e-12))
    status = "OPTIMAL" if gap <= options.gap + 1e-9 else "FEASIBLE"
    entries = [e[2] for e in heap] + s.closed
    idle = _idle_devices(problem, best, entries, usable, value, options.gap, bool(unbounded))
    return SearchResult(
        best, value, bound, gap, status, time.perf_counter() - clock, space, candidates,
        s.solved, idle,
    )  # fmt: skip


def _idle_devices(problem, best: Incumbent, entries, usable, value: float, gap: float,
                  unbounded: bool):  # fmt: skip
    """Each device the plan leaves out, with the proof (or the lack of one) that using it too
    does not pay: the least lower bound over the candidates that use more devices of its kind."""
    used = Counter(device_kind(d) for d in best.order)
    names = {d.name for d in best.order}
    out = []
    seen: Counter = Counter()
    for d in problem.cluster.devices:
        if d.name in names:
            continue
        if d not in usable:
            out.append(IdleDevice(d.name, "its cost table prices none of the bits it allows"))
            continue
        kind = device_kind(d)
        seen[kind] += 1
        more = used[kind] + seen[kind]
        bounds = [c.bound for c in entries if c.kinds[kind] >= more]
        least = 0.0 if unbounded else min(bounds, default=math.inf)
        what = "makespan" if problem.theta == 0 else "objective (makespan + θ·Σω)"
        if not math.isfinite(least):
            reason = "no plan that also uses it fits in memory and meets the quality target"
        elif least >= value * (1 - 1e-9):
            reason = (f"every plan that also uses it has a {what} of at least {least:.6g} ms "
                      f"(a proven lower bound) against this plan's {value:.6g} ms")  # fmt: skip
        elif least >= value * (1 - gap) - 1e-9:
            reason = (f"a plan that also uses it could be faster by at most the gap target "
                      f"({gap:.2%}): its {what} is at least {least:.6g} ms (a proven lower bound) "
                      f"against this plan's {value:.6g} ms")  # fmt: skip
        else:
            reason = (f"not proven: the search stopped at its time limit with plans that also "
                      f"use it bounded only by {least:.6g} ms against this plan's {value:.6g} ms")  # fmt: skip
        out.append(IdleDevice(d.name, reason))
    return tuple(out)


def _infeasible(problem: PlanningProblem, coef, choices) -> UserError:
    """One line: the quality budget that cannot be met, or how much memory is missing at the
    lowest allowed bits (and on which device), and what to change."""
    gib = 1024**3
    if problem.omega_budget is not None:
        from llmpq.planner.baselines import adabits

        try:
            least = problem.sum_omega(adabits(problem.with_quality(theta=0.0)).bits_per_layer)
        except UserError:
            least = None
        if least is not None:
            return UserError(
                "quality budget", round(problem.omega_budget, 6),
                f"raise it to at least {least:.4g} (the best quality that fits) or add memory",
                problem="cannot be met on this cluster",
            )  # fmt: skip
    mb = min(choices, key=lambda c: (c.prefill_size, c.decode_size))
    held, need_bits, layer_gib = [], [], []
    for device in problem.cluster.devices:  # as a middle stage: no embeddings, no head
        if not problem.allowed_bits(device):
            continue
        c = coef(device, mb, False, False, device)
        most = np.nan_to_num(np.minimum(c.prefill.most_layers(device.memory_bytes),
                                        c.decode.most_layers(device.memory_bytes)), nan=0.0)  # fmt: skip
        k = int(np.argmax(most))
        held.append((device, max(0, int(most[k]))))
        need_bits.append(BITS[k])
        layer_gib.append(max(c.prefill.layer_bytes[k], c.decode.layer_bytes[k]) / gib)
    if not held:
        return UserError("cluster", problem.cluster.name, "add devices that support 3/4/8/16 bits")
    total = sum(n for _, n in held)
    counts = " + ".join(f"{n} ({d.name})" for d, n in held)
    why = (f"at {min(need_bits)} bits with this workload's KV cache and workspace the devices hold "
           f"at most {counts} = {total} of its {problem.num_layers} layers" if total < problem.num_layers
           else f"no split of its {problem.num_layers} layers fits: the stages that also hold the "
           f"embeddings or the head, or the workspace of mixed bits, overflow although the devices "
           f"hold {counts} = {total} middle layers at {min(need_bits)} bits")  # fmt: skip
    return UserError(
        "cluster", problem.cluster.name,
        f"{problem.spec.name}: {why} (a layer with its KV cache takes at least "
        f"{min(layer_gib):.2f} GiB, the devices have {problem.cluster.total_memory_bytes / gib:.2f} "
        f"GiB); add a device, "
        f"allow lower bits, or use a smaller batch_size or shorter sequences",
        problem="cannot hold the model",
    )  # fmt: skip
