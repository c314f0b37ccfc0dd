"""The LP relaxation of the compact ILP, as matrices, for fast lower bounds (HiGHS via scipy).

Usage::

    from llmpq.planner.relaxation import lp_bound

    lp_bound(inst)      # ≤ the ILP optimum of ``inst`` (inf if even the LP is infeasible)

The outer search bounds every (order class, micro-batch) candidate before solving any; building
each bound as a python-mip model costs milliseconds of Python per candidate, so the same rows
as :func:`llmpq.planner.ilp.build_model` with ``relaxed_layers=True`` — integrality dropped —
are written here as arrays and handed to ``scipy.optimize.linprog`` (HiGHS). A test checks
that both give the same relaxation optimum on random instances.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linprog

from llmpq.planner.ilp import GiB, Instance

PARTS = ("both", "prefill", "decode")


def lp_bound(inst: Instance, part: str = "both") -> float:
    """The LP optimum; ``part`` "prefill" keeps only the prefill terms and rows, "decode" the
    decode ones and the quality term: their two optima add up to a (weaker) bound on the whole,
    and each depends on one micro-batch size only, so the search pays for far fewer LPs."""
    if part not in PARTS:
        raise ValueError(part)
    pre, dec = part != "decode", part != "prefill"
    N, L = inst.num_positions, inst.num_layers
    K = inst.lp.shape[1]
    cells = [(j, k) for j in range(N) for k in range(K) if inst.allowed(j, k)]
    nc = len(cells)
    per_layer = inst.per_layer
    ks = sorted({k for _, k in cells})
    ny = L * len(ks) if per_layer else 0
    # variable layout: n (nc) | u (N) | P | D | y (ny)
    iu, iP, iD, iy = nc, nc + N, nc + N + 1, nc + N + 2
    nv = iy + ny
    rows, rhs, eq_rows, eq_rhs = [], [], [], []

    def row() -> np.ndarray:
        return np.zeros(nv)

    cj = np.array([j for j, _ in cells])
    ck = np.array([k for _, k in cells])
    lp = inst.lp[cj, ck]
    ld = inst.ld[cj, ck]

    r = row()
    r[:nc] = 1.0
    eq_rows.append(r)
    eq_rhs.append(L)
    quality = row()
    if per_layer:
        for i in range(L):
            r = row()
            r[iy + i * len(ks) : iy + (i + 1) * len(ks)] = 1.0
            eq_rows.append(r)
            eq_rhs.append(1.0)
            quality[iy + i * len(ks) : iy + (i + 1) * len(ks)] = inst.omega[i, ks]
        for q, k in enumerate(ks):
            r = row()
            r[iy + q : iy + ny : len(ks)] = 1.0
            r[:nc][ck == k] = -1.0
            eq_rows.append(r)
            eq_rhs.append(0.0)
    else:
        quality[:nc] = inst.omega[0, ck]

    round_trip = row()
    round_trip[iD] = -1.0
    for j in range(N):
        mine = cj == j
        r = row()
        r[:nc][mine] = 1.0
        r[iu + j] = -L
        rows.append(r)
        rhs.append(0.0)
        r = row()
        r[:nc][mine] = -1.0
        r[iu + j] = 1.0
        rows.append(r)
        rhs.append(0.0)
        phases = ((inst.mem, inst.mfix, dec), (inst.mem_p, inst.mfix_p, pre))
        for mem, fixed, _ in (x for x in phases if x[2]):
            r = row()
            r[:nc][mine] = mem[j, ck[mine]] / GiB
            r[iu + j] = fixed[j] / GiB
            rows.append(r)
            rhs.append(inst.cap[j] / GiB)
        if pre:
            r = row()  # P ≥ t_p[j]
            r[:nc][mine] = lp[mine]
            r[iu + j] = inst.fp[j]
            r[iP] = -1.0
            rows.append(r)
            rhs.append(0.0)
            r = row()  # P ≥ cp[j] u[j]
            r[iu + j] = inst.cp[j]
            r[iP] = -1.0
            rows.append(r)
            rhs.append(0.0)
        if dec:
            r = row()  # D ≥ m_d t_d[j]
            r[:nc][mine] = inst.m_d * ld[mine]
            r[iu + j] = inst.m_d * inst.fd[j]
            r[iD] = -1.0
            rows.append(r)
            rhs.append(0.0)
            r = row()  # D ≥ m_d S cd[j] u[j]
            r[iu + j] = inst.m_d * inst.steps * inst.cd[j]
            r[iD] = -1.0
            rows.append(r)
            rhs.append(0.0)
        round_trip[:nc][mine] = ld[mine]
        round_trip[iu + j] = inst.fd[j] + inst.steps * inst.cd[j]
    if dec:
        rows.append(round_trip)
        rhs.append(0.0)
    if inst.budget is not None:
        rows.append(quality)
        rhs.append(inst.budget)

    c = row()
    if pre:
        c[:nc] = lp
        c[iu : iu + N] = inst.fp + inst.cp
        c[iP] = inst.m_p - 1
    if dec:
        c[iD] = 1.0
        c += inst.theta * quality
    bounds = [(0, L)] * nc + [(0, 1)] * N + [(0, None), (0, None)] + [(0, 1)] * ny
    for j in {0, N - 1}:
        bounds[iu + j] = (1, 1)
    res = linprog(c, A_ub=np.array(rows), b_ub=np.array(rhs), A_eq=np.array(eq_rows),
                  b_eq=np.array(eq_rhs), bounds=bounds, method="highs")  # fmt: skip
    return float(res.fun) if res.status == 0 else math.inf
