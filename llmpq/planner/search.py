"""The outer search: every device order and micro-batch choice, pruned by bounds, certified.

Usage::

    from llmpq.planner.search import search

    found = search(problem, SolverOptions(time_limit_s=10, gap=0.01), starts=[baseline_plan])
    found.order, found.micro_batch, found.solution.stage_bits()
    found.objective, found.bound, found.gap          # the gap is over the *whole* search

How: one candidate per (order class, micro-batch choice) (:mod:`llmpq.planner.candidates`).
Each gets a lower bound: the sum of two LP relaxations of its compact ILP, one with only the
prefill terms (depends on the prefill size) and one with only the decode terms and the quality
term (depends on the decode choice), so an order class costs one LP per prefill size plus one
per decode choice rather than one per pair (HiGHS on the matrices of
:mod:`llmpq.planner.relaxation`, about a millisecond each). The candidates are taken in order
of these bounds; each is bounded again by its joint LP, and solved only if that can still beat
the incumbent; once the next bound is within the gap target of the incumbent, the rest cannot
win and are pruned. A time limit is checked while bounding too: classes never bounded count
with the trivial bound 0, so the reported gap stays honest. With layer-specific ω a candidate is
first solved in the relaxed compact form (a bound for every order of its class), and the exact
layer assignment is solved for the class's orders only while that bound can still beat the
incumbent. The global bound is the least of the pruned candidates' LP bounds and the solved
candidates' ILP bounds, so the reported gap is a certificate for the whole search, not one
solve. A time limit stops the search with the best incumbent kept (status ``FEASIBLE``).

Plans given as ``starts`` (the baselines) enter as incumbents when they meet the quality
target, so the search never returns worse than them under the ILP's objective. The final pick
among the best few incumbents is made by the time model itself (:func:`evaluate_stages`),
which also counts the decode fill and the per-step regime the ILP aggregates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.errors import UserError
from llmpq.plan import MicroBatch, Plan
from llmpq.planner.candidates import device_orders, micro_batches, order_classes
from llmpq.planner.ilp import (
    DEFAULT_SOLVER,
    Instance,
    Solution,
    SolverOptions,
    bits_from_counts,
    build_model,
    instance_for,
    solve,
    warm_start,
)
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.relaxation import lp_bound
from llmpq.planner.time_model import combine, evaluate_stages, phase_coefficients

MAX_EXACT_ORDERS_PER_CLASS = 8
FINALISTS = 4


@dataclass(frozen=True)
class Incumbent:
    order: tuple[ClusterDevice, ...]
    micro_batch: MicroBatch
    counts: np.ndarray
    bits_per_layer: tuple[int, ...]
    objective: float  # the ILP's objective
    source: str  # "ilp" or the baseline's name

    def stages(self) -> list[tuple[ClusterDevice, list[int]]]:
        """Used positions only, as (device, bits of its layers)."""
        out, i = [], 0
        for device, row in zip(self.order, self.counts, strict=True):
            size = int(row.sum())
            if size:
                out.append((device, list(self.bits_per_layer[i : i + size])))
            i += size
        return out


@dataclass(frozen=True)
class SearchResult:
    best: Incumbent
    objective: float  # ILP objective of the best incumbent
    bound: float  # lower bound over every candidate
    gap: float
    status: str  # OPTIMAL (gap target proven) | FEASIBLE (time limit)
    seconds: float
    candidates: int
    solved: int
    pruned: int
    finalists: tuple[Incumbent, ...] = field(default=())


class CoefficientCache:
    """Memo of the per-phase coefficients by (device, phase, size, ends, next device). They do
    not depend on the quality target, so one cache serves every θ or budget of a problem
    (:meth:`PlanningProblem.with_quality`) — what an interactive θ slider needs."""

    def __init__(self, problem: PlanningProblem) -> None:
        self.problem, self.memo = problem, {}

    def serves(self, problem: PlanningProblem) -> bool:
        a, b = self.problem, problem
        return a is b or (a.spec == b.spec and a.cluster == b.cluster and a.workload == b.workload
                          and a.comm == b.comm and dict(a.costs) == dict(b.costs))  # fmt: skip

    def phase(self, device, phase: str, size: int, first: bool, last: bool, nxt):
        key = (device.name, phase, size, first, last, nxt.name)
        if key not in self.memo:
            self.memo[key] = phase_coefficients(
                self.problem, device, phase, size, is_first=first, is_last=last, next_device=nxt
            )
        return self.memo[key]

    def __call__(self, device, mb, first, last, nxt):
        return combine(
            self.phase(device, "prefill", mb.prefill_size, first, last, nxt),
            self.phase(device, "decode", mb.decode_size, first, last, nxt),
            device.memory_bytes,
        )


def linear_objective(inst: Instance, counts: np.ndarray, bits_per_layer: Sequence[int]) -> float:
    """The ILP's objective of a given assignment (inf if it breaks a constraint)."""
    used = counts.sum(axis=1) > 0
    if not (used[0] and used[-1]) or counts.sum() != inst.num_layers:
        return math.inf
    with np.errstate(invalid="ignore"):
        if np.any((counts > 0) & ~np.isfinite(inst.lp)):
            return math.inf
        c = counts.astype(float)
        for mem, fixed in ((inst.mem, inst.mfix), (inst.mem_p, inst.mfix_p)):
            if np.any(np.nansum(mem * c, axis=1) + fixed * used > inst.cap):
                return math.inf
        t_p = np.nansum(inst.lp * c, axis=1) + inst.fp * used
        t_d = np.nansum(inst.ld * c, axis=1) + inst.fd * used
    cp, cd = inst.cp * used, inst.cd * used
    P = max(t_p.max(), cp.max())
    D = max((t_d + inst.steps * cd).sum(), inst.m_d * t_d.max(), inst.m_d * inst.steps * cd.max())
    cols = [BITS.index(b) for b in bits_per_layer]
    quality = float(inst.omega[np.arange(len(cols)), cols].sum())
    if inst.budget is not None and quality > inst.budget * (1 + 1e-9):
        return math.inf
    return float((t_p + cp).sum() + (inst.m_p - 1) * P + D + inst.theta * quality)


def _start_from_plan(
    plan: Plan, problem: PlanningProblem
) -> tuple[tuple, MicroBatch, np.ndarray, tuple]:
    devices = [problem.cluster.device(s.device) for s in plan.stages]
    counts = np.zeros((len(devices), len(BITS)), dtype=int)
    for j, s in enumerate(plan.stages):
        for b in s.bits:
            counts[j, BITS.index(b)] += 1
    return tuple(devices), plan.micro_batch, counts, tuple(plan.bits_per_layer())


def search(
    problem: PlanningProblem,
    options: SolverOptions = DEFAULT_SOLVER,
    *,
    starts: Sequence[Plan] = (),
    orders: Sequence[tuple[ClusterDevice, ...]] | None = None,
    choices: Sequence[MicroBatch] | None = None,
    cache: CoefficientCache | None = None,
) -> SearchResult:
    """Best plan over orders × micro-batches (see the module docstring)."""
    clock = time.perf_counter()
    deadline = clock + options.time_limit_s
    coef = cache if cache is not None and cache.serves(problem) else CoefficientCache(problem)
    orders = list(orders) if orders is not None else device_orders(problem.cluster)
    classes = order_classes(problem.cluster, orders, problem.comm)
    choices = list(choices) if choices is not None else micro_batches(
        problem.workload, len(problem.cluster.devices)
    )  # fmt: skip

    pool: list[Incumbent] = []
    for plan in starts:
        order, mb, counts, bits = _start_from_plan(plan, problem)
        inst = instance_for(problem, order, mb, coef)
        value = linear_objective(inst, counts, bits)
        if math.isfinite(value):
            pool.append(Incumbent(order, mb, counts, bits, value, plan.method))

    # Bounds by phase: one LP per (class, prefill size) and per (class, decode choice); their
    # sums bound every (class, micro-batch) candidate at a fraction of the joint LPs' cost.
    prefill_sizes = sorted({c.prefill_size for c in choices})
    decode_choices = sorted({(c.decode_size, c.decode_count) for c in choices})
    candidates = []  # (bound, class index, choice index)
    timed_out = False
    for ci, members in enumerate(classes):
        if time.perf_counter() > deadline:
            timed_out = True
            break
        first_pre, first_dec = prefill_sizes[0], decode_choices[0]
        pre = {p: lp_bound(instance_for(problem, members[0], MicroBatch(p, *first_dec), coef),
                           "prefill") for p in prefill_sizes}  # fmt: skip
        dec = {d: lp_bound(instance_for(problem, members[0], MicroBatch(first_pre, *d), coef),
                           "decode") for d in decode_choices}  # fmt: skip
        for mi, mb in enumerate(choices):
            lb = pre[mb.prefill_size] + dec[(mb.decode_size, mb.decode_count)]
            if math.isfinite(lb):
                candidates.append((lb, ci, mi))
    candidates.sort()
    if not candidates and not pool and not timed_out:
        raise _infeasible(problem, coef, orders, choices)

    def best_value() -> float:
        return min((p.objective for p in pool), default=math.inf)

    open_bounds: list[float] = [0.0] if timed_out else []  # 0: classes never bounded
    solved = pruned = 0
    for pos, (lb, ci, mi) in enumerate(candidates):
        incumbent = best_value()
        if lb >= incumbent * (1 - options.gap):
            pruned = len(candidates) - pos
            open_bounds.append(lb)
            break
        remaining = deadline - time.perf_counter()
        if remaining <= 0.05:
            timed_out = True
            open_bounds.append(lb)  # the least bound of what is left
            break
        members, mb = classes[ci], choices[mi]
        inst = instance_for(problem, members[0], mb, coef)
        joint = lp_bound(inst)
        if not math.isfinite(joint):
            continue  # infeasible
        if joint >= incumbent * (1 - options.gap):
            open_bounds.append(joint)
            continue
        model, v = build_model(inst, options, relaxed_layers=True)
        best = min(pool, key=lambda p: p.objective) if pool else None
        if best is not None and best.micro_batch == mb and best.order == members[0]:
            warm_start(model, v, best.counts, best.bits_per_layer)
        sol = solve(model, v, inst, options, time_limit_s=remaining)
        solved += 1
        if not sol.found:
            if sol.status not in ("INFEASIBLE", "INT_INFEASIBLE"):
                open_bounds.append(joint)  # stopped without a solution: its bound stays open
            continue
        if not inst.per_layer:
            open_bounds.append(sol.bound)
            pool.append(
                Incumbent(members[0], mb, sol.counts, sol.bits_per_layer, sol.objective, "ilp")
            )
            continue
        _solve_exact_members(problem, options, coef, members, mb, sol, pool, open_bounds, deadline)

    if not pool:
        if timed_out:
            raise UserError(
                "time limit", f"{options.time_limit_s} s", "raise it (--time-limit)",
                problem="ended before any plan was found",
            )  # fmt: skip
        raise _infeasible(problem, coef, orders, choices)
    incumbent = best_value()
    bound = min(open_bounds + [incumbent])
    gap = max(0.0, (incumbent - bound) / max(abs(incumbent), 1e-12))
    finalists = sorted(pool, key=lambda p: p.objective)[:FINALISTS]
    best = min(finalists, key=lambda p: _evaluated(problem, p))
    status = "FEASIBLE" if timed_out or gap > options.gap + 1e-9 else "OPTIMAL"
    return SearchResult(
        best, incumbent, bound, gap, status, time.perf_counter() - clock,
        len(candidates), solved, pruned, tuple(finalists),
    )  # fmt: skip


def _solve_exact_members(problem, options, coef, members, mb, relaxed: Solution, pool, open_bounds,
                         deadline) -> None:  # fmt: skip
    """Layer-specific ω: the exact assignment for the class's orders while they can win."""
    explored = 0
    for order in members[:MAX_EXACT_ORDERS_PER_CLASS]:
        incumbent = min((p.objective for p in pool), default=math.inf)
        remaining = deadline - time.perf_counter()
        if relaxed.bound >= incumbent * (1 - options.gap) or remaining <= 0.05:
            break
        inst = instance_for(problem, order, mb, coef)
        model, v = build_model(inst, options)
        warm_start(model, v, relaxed.counts, bits_from_counts(relaxed.counts, inst.omega))
        sol = solve(model, v, inst, options, time_limit_s=remaining)
        explored += 1
        if sol.found:
            pool.append(Incumbent(order, mb, sol.counts, sol.bits_per_layer, sol.objective, "ilp"))
            open_bounds.append(sol.bound)
    if explored < len(members):
        incumbent = min((p.objective for p in pool), default=math.inf)
        if relaxed.bound < incumbent * (1 - options.gap):
            open_bounds.append(relaxed.bound)  # unexplored orders of the class


def _evaluated(problem: PlanningProblem, p: Incumbent) -> float:
    ev = evaluate_stages(problem, p.stages(), p.micro_batch)
    if not ev.fits:
        return math.inf
    return ev.makespan_s * 1e3 + problem.theta * ev.sum_omega


def _infeasible(problem: PlanningProblem, coef, orders, choices) -> UserError:
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
    n = len(problem.cluster.devices)
    need, worst = 0.0, None
    for j, device in enumerate(problem.cluster.devices):
        c = coef(device, mb, j == 0, j == n - 1, device)
        if not problem.allowed_bits(device):
            continue
        share = problem.num_layers * device.memory_bytes / problem.cluster.total_memory_bytes
        device_need = float(np.nanmin(c.layer_bytes)) * share + c.fixed_bytes
        need += device_need
        short = device_need - device.memory_bytes
        if worst is None or short > worst[0]:
            worst = (short, device, min(problem.allowed_bits(device)))
    if worst is None:
        return UserError("cluster", problem.cluster.name, "add devices that support 3/4/8/16 bits")
    _, device, bits = worst
    return UserError(
        "cluster", problem.cluster.name,
        f"{problem.spec.name} needs about {need / gib:.2f} GiB at {bits} bits for this workload "
        f"and the devices have {problem.cluster.total_memory_bytes / gib:.2f} GiB ({device.name} "
        f"is shortest); add a device, allow lower bits, or use a smaller batch_size or shorter "
        f"sequences", problem="cannot hold the model",
    )  # fmt: skip
