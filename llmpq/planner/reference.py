"""The original paper's ILP (reference §2), written in python-mip, for comparison only.

Usage::

    from llmpq.planner.reference import solve_reference

    ref = solve_reference(problem, order, micro_batch, SolverOptions(time_limit_s=60))
    ref.solution.status, ref.solution.seconds, ref.found.stages

As in LLM-PQ's ``solve_ilp_pulp``: binaries ``z[i,j,b]`` (layer i on device j at bits b),
``x[i,j]`` and ``y[i,b]`` linked to them; memory per device; stage times
``T_pre_j ≥ Σ z·l_pre``, ``T_pre_j ≥ C_pre_j`` (and the same for decode), ``T_pre ≥ T_pre_j``;
order and contiguity by the pairwise rows ``x[i,j] + x[i−1,k] ≤ 1`` for every ``j < k``
(O(L·N²)), with the first layer on the first device and the last on the last; the objective of
§1.3 — ``Σ_j T_pre_j + (m_p − 1) T_pre + Σ_j T_dec_j + (m_d − 1)(n − 1) T_dec + θ Σω`` — whose
decode term vanishes on one device. Decode latency is one step at the mid context
(``s + n/2``). Its plans are priced afterwards by llmpq's own time model, so the two
formulations are compared on the same scale.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import mip
import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.plan import MicroBatch
from llmpq.planner.formulation import GiB
from llmpq.planner.ilp import DEFAULT_SOLVER, Solution, SolverOptions, new_model
from llmpq.planner.instance import instance_for
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.search import Incumbent, incumbent_of


@dataclass(frozen=True)
class ReferenceResult:
    solution: Solution
    found: Incumbent | None  # priced with llmpq's closed form (inf if it breaks a rule)
    num_binaries: int
    num_constraints: int


def solve_reference(
    problem: PlanningProblem,
    order: Sequence[ClusterDevice],
    micro_batch: MicroBatch,
    options: SolverOptions = DEFAULT_SOLVER,
) -> ReferenceResult:
    inst = instance_for(problem, order, micro_batch)
    N, K, L = inst.num_positions, len(BITS), inst.num_layers
    # the mean step: one step at the mid context (linear in context)
    l_dec = inst.ld.mean(axis=2) if inst.steps else np.zeros_like(inst.lp)
    f_dec = inst.fd.mean(axis=1) if inst.steps else np.zeros(N)
    # memory as the original: per layer at the full context, the largest workspace always
    mem, mfix = inst.mem_layer[1], np.nanmax(inst.mem_base, axis=(0, 2))
    m = new_model(options)
    cells = [(j, k) for j in range(N) for k in range(K) if inst.allowed(j, k)]
    z = {(i, j, k): m.add_var(f"z_{i}_{j}_{k}", var_type=mip.BINARY)
         for i in range(L) for j, k in cells}  # fmt: skip
    x = {(i, j): m.add_var(f"x_{i}_{j}", var_type=mip.BINARY) for i in range(L) for j in range(N)}
    y = {(i, k): m.add_var(f"y_{i}_{k}", var_type=mip.BINARY) for i in range(L) for k in range(K)}
    t_pre = [m.add_var(f"Tpre_{j}", lb=0) for j in range(N)]
    t_dec = [m.add_var(f"Tdec_{j}", lb=0) for j in range(N)]
    T_pre, T_dec = m.add_var("Tpre", lb=0), m.add_var("Tdec", lb=0)
    for i in range(L):
        m.add_constr(mip.xsum(z[i, j, k] for j, k in cells) == 1)
        m.add_constr(mip.xsum(x[i, j] for j in range(N)) == 1)
        m.add_constr(mip.xsum(y[i, k] for k in range(K)) == 1)
        for j in range(N):
            m.add_constr(x[i, j] == mip.xsum(z[i, j, k] for j2, k in cells if j2 == j))
        for k in range(K):
            m.add_constr(y[i, k] == mip.xsum(z[i, j, k] for j, k2 in cells if k2 == k))
    for j in range(N):
        mine = [(i, j, k) for i in range(L) for j2, k in cells if j2 == j]
        m.add_constr(
            mip.xsum(mem[j, k] / GiB * z[i, j, k] for i, _, k in mine)
            <= (inst.cap[j] - mfix[j]) / GiB
        )
        m.add_constr(t_pre[j] >= mip.xsum(inst.lp[j, k] * z[i, j, k] for i, _, k in mine)
                     + inst.fp[j])  # fmt: skip
        m.add_constr(t_dec[j] >= mip.xsum(l_dec[j, k] * z[i, j, k] for i, _, k in mine)
                     + f_dec[j])  # fmt: skip
        m.add_constr(t_pre[j] >= inst.cp[j])
        m.add_constr(t_dec[j] >= inst.cd[j])
        m.add_constr(T_pre >= t_pre[j])
        m.add_constr(T_dec >= t_dec[j])
    m.add_constr(x[0, 0] == 1)
    m.add_constr(x[L - 1, N - 1] == 1)
    for i in range(1, L):
        for j in range(N):
            for k in range(j + 1, N):
                m.add_constr(x[i, j] + x[i - 1, k] <= 1)
    quality = mip.xsum(float(inst.omega[i, k]) * y[i, k] for i in range(L) for k in range(K))
    if inst.budget is not None:
        m.add_constr(quality <= inst.budget)
    m.objective = mip.minimize(
        mip.xsum(t_pre) + (inst.m_p - 1) * T_pre + mip.xsum(t_dec)
        + (inst.m_d - 1) * inst.steps * T_dec + inst.theta * quality
    )  # fmt: skip
    m.max_mip_gap, m.max_mip_gap_abs = options.gap, 1e-9
    start = time.perf_counter()
    model_status = m.optimize(max_seconds=options.time_limit_s)
    seconds = time.perf_counter() - start
    found = None
    if model_status in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        counts = np.zeros((N, K), dtype=int)
        bits = [0] * L
        for (i, j, k), var in z.items():
            if var.x > 0.5:
                counts[j, k] += 1
                bits[i] = BITS[k]
        objective, bound = float(m.objective_value), float(m.objective_bound)
        sol = Solution(model_status.name, counts, tuple(bits), objective, bound,
                       abs(objective - bound) / max(abs(objective), 1e-12), seconds)  # fmt: skip
        stages = list(zip(order, sol.stage_bits(), strict=True))
        found = incumbent_of(problem, stages, micro_batch, "reference")
    else:
        sol = Solution(model_status.name, None, None, None, None, None, seconds)
    return ReferenceResult(sol, found, len(z) + len(x) + len(y), m.num_rows)
