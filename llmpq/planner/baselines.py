"""The baselines, priced with the same costs: PipeEdge, Uniform and AdaBits.

Usage::

    from llmpq.planner.baselines import pipeedge, uniform, adabits

    found = pipeedge(problem)        # an Incumbent: order, micro-batch, counts, bits per layer

All three keep the cluster file's device order and the original's micro-batches: prefill and
decode micro-batches of ``ceil(B / N)``, ``N`` decode micro-batches (reference §3.1, §8).

* **PipeEdge** — heterogeneous min-max partition by exact dynamic programming over (device,
  layers so far): the stage cost is the decode-phase time of one micro-batch at the mid
  context, or its outgoing transfer if larger (phase-unaware); one uniform bitwidth, the highest
  with a feasible partition. Middle devices may get no layers.
* **Uniform** — layers split as evenly as possible over the devices in order, the highest
  uniform bitwidth that fits every device; the prefill size is chosen by the time model among
  the divisors of the batch (the original meant to, but kept the last feasible one: §8).
* **AdaBits** — memory-only: the least Σω that fits (the ILP with the latency terms removed),
  then, among plans of that Σω, the fastest.

Memory is checked with the exact memory model (as the ILP's rows are), and every baseline plan
is priced by the closed form, so each lies inside llmpq's search space and is one of its
starts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from llmpq.errors import UserError
from llmpq.plan import MicroBatch
from llmpq.planner.ilp import DEFAULT_SOLVER, SolverOptions, solve_instance
from llmpq.planner.instance import instance_for
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.search import Incumbent, incumbent_of
from llmpq.planner.time_model import evaluate_stages


def original_micro_batch(problem: PlanningProblem, prefill_size: int | None = None) -> MicroBatch:
    b, n = problem.workload.batch_size, len(problem.cluster.devices)
    size = math.ceil(b / n)
    return MicroBatch(prefill_size or size, size, math.ceil(b / size))


def _uniform_counts(n_positions: int, k: int, sizes) -> np.ndarray:
    counts = np.zeros((n_positions, len(BITS)), dtype=int)
    counts[:, k] = sizes
    return counts


def _incumbent(problem, order, mb, counts, name) -> Incumbent:
    stages = []
    for device, row in zip(order, counts, strict=True):
        stages.append((device, [BITS[k] for k in range(len(BITS)) for _ in range(int(row[k]))]))
    return incumbent_of(problem, stages, mb, name)


def _no_uniform_fit(problem: PlanningProblem, method: str) -> UserError:
    return UserError(
        "cluster", problem.cluster.name,
        f"{method} needs one bitwidth for every layer and none of {list(BITS)} fits; add a "
        "device or use a smaller batch_size or shorter sequences", problem="cannot hold the model",
    )  # fmt: skip


def pipeedge(problem: PlanningProblem) -> Incumbent:
    order = problem.cluster.devices
    mb = original_micro_batch(problem)
    inst = instance_for(problem, order, mb)
    N = len(order)
    for k in reversed(range(len(BITS))):
        if not all(np.isfinite(inst.lp[j, k]) for j in range(N)):
            continue
        per_layer = inst.ld[:, k].mean(axis=1) if inst.steps else np.zeros(N)  # ≈ mid context
        fixed = inst.fd.mean(axis=1) if inst.steps else np.zeros(N)
        sizes = _minmax_partition(inst, k, per_layer, fixed)
        if sizes is not None:
            return _incumbent(problem, order, mb, _uniform_counts(N, k, sizes), "pipeedge")
    raise _no_uniform_fit(problem, "PipeEdge")


def _minmax_partition(inst, k: int, per_layer, fixed) -> list[int] | None:
    """Exact DP: layers per position minimising the largest stage cost; ends non-empty."""
    N, L = inst.num_positions, inst.num_layers
    inf = math.inf
    best = np.full((N + 1, L + 1), inf)
    choice = np.zeros((N + 1, L + 1), dtype=int)
    best[0, 0] = 0.0
    for j in range(N):
        lo = 1 if j in (0, N - 1) else 0
        for done in range(L + 1):
            if not math.isfinite(best[j, done]):
                continue
            for take in range(lo, L - done + 1):
                if not inst.fits_uniform(j, k, take):
                    break
                cost = 0.0 if take == 0 else max(per_layer[j] * take + fixed[j], inst.cd[j])
                value = max(best[j, done], cost)
                if value < best[j + 1, done + take] - 1e-12:
                    best[j + 1, done + take] = value
                    choice[j + 1, done + take] = take
    if not math.isfinite(best[N, L]):
        return None
    sizes, left = [], L
    for j in range(N, 0, -1):
        take = int(choice[j, left])
        sizes.append(take)
        left -= take
    return sizes[::-1]


def uniform(problem: PlanningProblem) -> Incumbent:
    order = problem.cluster.devices
    N, L, B = len(order), problem.num_layers, problem.workload.batch_size
    if L < N:
        raise UserError(
            "cluster", f"{N} devices", f"Uniform needs at most {L} devices (one layer each)",
            "is larger than the model",
        )  # fmt: skip
    sizes = [L // N + (1 if j < L % N else 0) for j in range(N)]
    best = None
    for k in reversed(range(len(BITS))):
        for p in (d for d in range(1, B + 1) if B % d == 0):
            mb = original_micro_batch(problem, p)
            inst = instance_for(problem, order, mb)
            if not all(inst.fits_uniform(j, k, sizes[j]) for j in range(N)):
                continue
            cand = _incumbent(problem, order, mb, _uniform_counts(N, k, sizes), "uniform")
            ev = evaluate_stages(problem, cand.stages, mb)
            if best is None or ev.makespan_s < best[0]:
                best = (ev.makespan_s, cand)
        if best is not None:
            return best[1]
    raise _no_uniform_fit(problem, "Uniform")


def adabits(problem: PlanningProblem, options: SolverOptions = DEFAULT_SOLVER) -> Incumbent:
    order = problem.cluster.devices
    mb = original_micro_batch(problem)
    inst = instance_for(problem, order, mb)
    zero = np.zeros_like
    quality_only = replace(
        inst, lp=np.where(np.isfinite(inst.lp), 0.0, inst.lp), ld=zero(inst.ld), fp=zero(inst.fp),
        fd=zero(inst.fd), cp=zero(inst.cp), cd=zero(inst.cd), theta=1.0, budget=None,
    )  # fmt: skip
    best_quality = solve_instance(quality_only, options, segments=1)
    if not best_quality.found:
        raise UserError(
            "cluster", problem.cluster.name,
            "add a device, allow lower bits, or use a smaller batch_size or shorter sequences",
            problem=f"cannot hold {problem.spec.name} in the given device order",
        )  # fmt: skip
    budget = best_quality.objective * (1 + 1e-9) + 1e-12
    fastest = solve_instance(replace(inst, theta=0.0, budget=budget), options)
    sol = fastest if fastest.found else best_quality
    return incumbent_of(problem, list(zip(order, sol.stage_bits(), strict=True)), mb, "adabits")
