"""First lower bounds for every candidate at once: one LP per phase and micro-batch size, batched.

Usage::

    from llmpq.planner.bounds import PhaseBlock, phase_bounds

    blocks = [PhaseBlock.prefill(problem, coef, order, size) for size in (1, 2, 4)]
    blocks += [PhaseBlock.decode(problem, coef, order, size, count) for size, count in ...]
    phase_bounds(blocks)          # one bound per block (inf: that block is infeasible)

A candidate (order class, micro-batch) is first bounded by the sum of a prefill bound (which
depends only on its prefill size) and a decode bound (only its decode size and count), so an
order class costs one small LP per prefill size plus one per decode choice. Each is a
relaxation of that phase's part of the ILP (:mod:`llmpq.planner.formulation`) that keeps only
what is cheap and binds most: the layer counts (fractional), every position used, that phase's
memory peak with the least workspace of the allowed bits, its time rows with the decode steps
in one segment and no fill, and the budget with each bitwidth's least ω over the layers. Each
such LP's optimum is at most the part's ILP optimum, so their sum bounds the candidate.

Thousands of such LPs are solved as a few block-diagonal LPs (a block's optimum is the
block-diagonal optimum's restriction to it), so one infeasible block must not enter: whether a
block's memory rows can be met is decided in closed form (each position's most layers is a
fractional knapsack), and with a budget or both phases by a slack pass (the soft rows with a
slack, the slacks minimised); then the blocks that can be met are solved. scipy's HiGHS costs
milliseconds per call whatever the size, so batching is what makes the first bounds of an
8-device cluster's ~150 order classes × 60 micro-batch choices take about a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import block_diag, csr_matrix

from llmpq.planner.formulation import GiB
from llmpq.planner.problem import BITS, PlanningProblem

CHUNK = 256  # blocks per LP
FEASIBLE_SLACK = 1e-7  # GiB or ω units: a block whose least slack exceeds this cannot be met


@dataclass(frozen=True, eq=False)
class PhaseBlock:
    """One relaxation: minimise ``c·x + constant`` subject to ``A x ≤ b`` (rows marked
    ``soft`` may be missed: memory and budget), ``Σ n = L``, bounds. ``x`` = the layer counts
    n (N·K cells) and then the time variables (one per phase)."""

    c: np.ndarray
    constant: float
    A: np.ndarray
    b: np.ndarray
    soft: np.ndarray  # (rows,) bool
    lower: np.ndarray  # (variables,)
    upper: np.ndarray
    num_cells: int
    num_layers: int
    memory: tuple | None = None  # (a (N, K), room (N,)) of a one-phase block's memory rows
    budget: bool = False  # whether a budget row is among the soft rows

    def feasible(self) -> bool | None:
        """Whether the soft rows can be met, in closed form where they are one phase's memory
        rows alone (each position's most layers is a fractional knapsack: fill the cheapest
        bitwidths first); None when only the LP can tell (a budget, or both phases)."""
        if self.memory is None or self.budget:
            return None
        a, room = self.memory
        most = self.upper[: self.num_cells].reshape(a.shape)
        total = 0.0
        for j in range(a.shape[0]):
            left, held = room[j], 0.0
            for k in np.argsort(a[j]):
                if most[j, k] <= 0 or left < 0:
                    continue
                take = most[j, k] if a[j, k] <= 0 else min(most[j, k], left / a[j, k])
                held += take
                left -= take * a[j, k]
            if held < 1.0 - 1e-9:
                return False
            total += held
        return total >= self.num_layers - 1e-9

    def can_cover(self) -> bool:
        """Whether the layer-count bounds leave room for every layer, each position used."""
        n = self.upper[: self.num_cells].reshape(-1, len(BITS))
        return bool(n.sum() >= self.num_layers and (n.sum(axis=1) >= 1).all())

    @classmethod
    def joint(cls, prefill: PhaseBlock, decode: PhaseBlock) -> PhaseBlock:
        """Both phases over the same layer counts: the candidate's slim joint LP."""
        nc = prefill.num_cells
        tp, td = prefill.A.shape[1] - nc, decode.A.shape[1] - nc
        A = np.block([
            [prefill.A[:, :nc], prefill.A[:, nc:], np.zeros((prefill.A.shape[0], td))],
            [decode.A[:, :nc], np.zeros((decode.A.shape[0], tp)), decode.A[:, nc:]],
        ])  # fmt: skip
        return cls(
            np.concatenate([prefill.c[:nc] + decode.c[:nc], prefill.c[nc:], decode.c[nc:]]),
            prefill.constant + decode.constant, A, np.concatenate([prefill.b, decode.b]),
            np.concatenate([prefill.soft, decode.soft]),
            np.concatenate([np.maximum(prefill.lower[:nc], decode.lower[:nc]),
                            prefill.lower[nc:], decode.lower[nc:]]),
            np.concatenate([np.minimum(prefill.upper[:nc], decode.upper[:nc]),
                            prefill.upper[nc:], decode.upper[nc:]]),
            nc, prefill.num_layers, None, prefill.budget or decode.budget,
        )  # fmt: skip

    @classmethod
    def prefill(cls, problem: PlanningProblem, coef, order, size: int) -> PhaseBlock:
        phases = _phases(coef, order, "prefill", size)
        N, K = len(order), len(BITS)
        lp = np.array([p.layer_ms for p in phases])
        m_p = math.ceil(problem.workload.batch_size / size)
        allowed = np.isfinite(lp)
        lp = np.where(allowed, lp, 0.0)
        fp = np.array([p.fixed_ms for p in phases])
        cp = np.array([p.send_ms for p in phases])
        rows, rhs = [], []
        for j in range(N):  # P ≥ t_p[j]
            r = np.zeros(N * K + 1)
            r[j * K : (j + 1) * K] = lp[j]
            r[-1] = -1.0
            rows.append(r)
            rhs.append(-fp[j])
        c = np.concatenate([lp.ravel(), [m_p - 1.0]])
        return cls._finish(problem, order, phases, allowed, c, float(np.sum(fp + cp)), rows, rhs,
                           float(cp.max()))  # fmt: skip

    @classmethod
    def decode(cls, problem: PlanningProblem, coef, order, size: int, count: int) -> PhaseBlock:
        phases = _phases(coef, order, "decode", size)
        N, K = len(order), len(BITS)
        ld = np.array([p.layer_ms.sum(axis=1) for p in phases])  # (N, K) Σ over the steps
        allowed = np.isfinite(ld)
        ld = np.where(allowed, ld, 0.0)
        fd = np.array([np.sum(p.fixed_ms) for p in phases])
        cd = np.array([p.send_ms for p in phases])
        steps = problem.workload.gen_len - 1
        rows, rhs = [], []
        r = np.concatenate([ld.ravel(), [-1.0]])  # D ≥ Σ_j (t_d[j] + S cd[j])
        rows.append(r)
        rhs.append(-(float(fd.sum()) + steps * float(cd.sum())))
        if count > 1:
            for j in range(N):  # D ≥ m_d t_d[j]
                r = np.zeros(N * K + 1)
                r[j * K : (j + 1) * K] = count * ld[j]
                r[-1] = -1.0
                rows.append(r)
                rhs.append(-count * fd[j])
        least_omega = problem.omega.min(axis=0)
        c = np.concatenate([np.tile(problem.theta * least_omega, N), [1.0]])
        lower = count * steps * float(cd.max()) if count > 1 else 0.0
        return cls._finish(problem, order, phases, allowed, c, 0.0, rows, rhs, lower)

    @classmethod
    def _finish(cls, problem, order, phases, allowed, c, constant, rows, rhs, lower_time):
        N, K = allowed.shape
        L = problem.num_layers
        soft = [False] * len(rows)
        mem_a, mem_room = np.zeros((N, K)), np.zeros(N)
        for j, p in enumerate(phases):
            r = np.zeros(N * K + 1)  # every position used
            r[j * K : (j + 1) * K] = -1.0
            rows.append(r)
            rhs.append(-1.0)
            soft.append(False)
            layer = np.where(allowed[j], p.layer_bytes, 0.0) / GiB
            r = np.zeros(N * K + 1)  # memory at this phase's peak, the least workspace
            r[j * K : (j + 1) * K] = layer
            least = float(np.nanmin(p.base_bytes)) - p.held_bytes  # a one-layer stage holds less
            rows.append(r)
            rhs.append((order[j].memory_bytes - least) / GiB)
            soft.append(True)
            mem_a[j], mem_room[j] = layer, rhs[-1]
        if problem.omega_budget is not None:
            r = np.concatenate([np.tile(problem.omega.min(axis=0), N), [0.0]])
            rows.append(r)
            rhs.append(problem.omega_budget)
            soft.append(True)
        top = L - N + 1  # and the most layers of each bitwidth that fit each position alone
        most = np.array([p.most_layers(d.memory_bytes) for d, p in zip(order, phases, strict=True)])
        most = np.clip(np.where(allowed & np.isfinite(most), most, 0.0), 0.0, top)
        upper = np.concatenate([most.ravel(), [np.inf]])
        lower = np.concatenate([np.zeros(N * K), [lower_time]])
        return cls(np.asarray(c, float), constant, np.array(rows), np.array(rhs),
                   np.array(soft), lower, upper, N * K, L, (mem_a, mem_room),
                   problem.omega_budget is not None)  # fmt: skip


def _phases(coef, order, phase: str, size: int) -> list:
    n = len(order)
    return [coef.phase(order[j], phase, size, j == 0, j == n - 1, order[(j + 1) % n])
            for j in range(n)]  # fmt: skip


def _solve(blocks: Sequence[PhaseBlock], slack: bool) -> np.ndarray:
    """Each block's optimum (``slack``: each block's least total slack on its soft rows)."""
    mats, c, b, lo, hi, eq_rows, widths = [], [], [], [], [], [], []
    for blk in blocks:
        A, nv = blk.A, blk.A.shape[1]
        if slack:
            A = np.hstack([A, -blk.soft[:, None].astype(float)])
            c.append(np.concatenate([np.zeros(nv), [1.0]]))
            lo.append(np.concatenate([blk.lower, [0.0]]))
            hi.append(np.concatenate([blk.upper, [np.inf]]))
        else:
            c.append(blk.c)
            lo.append(blk.lower)
            hi.append(blk.upper)
        mats.append(A)
        b.append(blk.b)
        eq = np.zeros(A.shape[1])
        eq[: blk.num_cells] = 1.0
        eq_rows.append(eq[None, :])
        widths.append(A.shape[1])
    lo_all, hi_all = np.concatenate(lo), np.concatenate(hi)
    res = linprog(
        np.concatenate(c), A_ub=csr_matrix(block_diag(mats)), b_ub=np.concatenate(b),
        A_eq=csr_matrix(block_diag(eq_rows)),
        b_eq=np.array([float(blk.num_layers) for blk in blocks]),
        bounds=np.column_stack([lo_all, np.where(np.isinf(hi_all), np.nan, hi_all)]),
        method="highs", options={"presolve": False},  # block-diagonal: presolve costs ~30 %
    )  # fmt: skip
    if res.status != 0:
        raise RuntimeError(f"batched phase bounds: {res.message}")
    out, start = [], 0
    full_c = np.concatenate(c)
    for w in widths:
        out.append(float(full_c[start : start + w] @ res.x[start : start + w]))
        start += w
    return np.array(out)


def phase_bounds(blocks: Sequence[PhaseBlock]) -> list[float]:
    """One lower bound per block, inf where the block's memory or budget cannot be met."""
    out: list[float] = [math.inf] * len(blocks)
    known = {i: blk.feasible() for i, blk in enumerate(blocks) if blk.can_cover()}
    unknown = [i for i, f in known.items() if f is None]
    for start in range(0, len(unknown), CHUNK):  # the slack pass, where closed form cannot tell
        index = unknown[start : start + CHUNK]
        missed = _solve([blocks[i] for i in index], slack=True)
        known.update({i: bool(m <= FEASIBLE_SLACK) for i, m in zip(index, missed, strict=True)})
    feasible = [i for i, f in known.items() if f]
    for start in range(0, len(feasible), CHUNK):
        index = feasible[start : start + CHUNK]
        values = _solve([blocks[i] for i in index], slack=False)
        for i, v in zip(index, values, strict=True):
            out[i] = v + blocks[i].constant
    return out
