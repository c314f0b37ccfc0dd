"""Solving the ILP of one instance with python-mip (CBC, or HiGHS when installed).

Usage::

    from llmpq.planner.ilp import build_model, solve, solve_instance, SolverOptions

    form = formulate(instance_for(problem, order, micro_batch))    # llmpq.planner.formulation
    model, x = build_model(form)                        # the mathematics, nothing solved
    result = solve(model, x, form, SolverOptions(time_limit_s=10, gap=0.01))
    result.counts            # layers per (position, bits); result.bits_per_layer
    solve_instance(inst, SolverOptions(gap=0.0))          # formulate + build + solve

The rows are those of :mod:`llmpq.planner.formulation`, added as named constraints
(``memory_decode_1_2``, ``decode_round_0``, …) so that an infeasibility can be traced. A layer
assignment comes from the ``z`` binaries when the formulation has them, else from the counts
(:func:`bits_from_counts`: each stage's bits placed on its layers at least Σω).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import mip
import numpy as np

from llmpq.errors import UserError
from llmpq.planner.formulation import Formulation, formulate
from llmpq.planner.instance import Instance
from llmpq.planner.problem import BITS


@dataclass(frozen=True)
class SolverOptions:
    """Solver name (CBC, or HiGHS when ``mip[highs]`` is installed), limits, determinism."""

    name: str = "CBC"
    time_limit_s: float = 10.0
    gap: float = 1e-3  # relative gap at which a solve may stop
    threads: int = 1  # one thread: the same inputs give the same plan
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name.upper() not in ("CBC", "HIGHS"):
            raise UserError("solver", self.name, "use CBC or HiGHS")
        if not self.time_limit_s > 0:
            raise UserError("time limit", self.time_limit_s, "use a positive number of seconds")
        if not 0 <= self.gap < 1:
            raise UserError("gap", self.gap, "use a relative gap in [0, 1), e.g. 0.01")


DEFAULT_SOLVER = SolverOptions()


def new_model(solver: SolverOptions = DEFAULT_SOLVER) -> mip.Model:
    """An empty, quiet, deterministic python-mip model for ``solver``."""
    if solver.name.upper() == "CBC":
        # cffi resolves library functions lazily, under a lock; a Model freed by the garbage
        # collector while that lock is held (inside ffi.new) would need it again to reach
        # Cbc_deleteModel: a deadlock seen in the tests. Resolve the deleter before any Model.
        from mip import cbc

        cbc.cbclib.Cbc_deleteModel  # noqa: B018
    m = mip.Model(sense=mip.MINIMIZE, solver_name=solver.name.upper())
    m.verbose, m.threads, m.seed = 0, solver.threads, solver.seed
    return m


def build_model(
    form: Formulation, solver: SolverOptions = DEFAULT_SOLVER
) -> tuple[mip.Model, list]:
    """``form`` as a python-mip model (not solved) and its variables, by index."""
    m = new_model(solver)
    if solver.name.upper() == "CBC":
        m.cuts = 0  # these models are small: cut generation cost 2-3x the whole solve (measured)
    x = [
        m.add_var(name, lb=lo, ub=hi if hi != float("inf") else mip.INF,
                  var_type=mip.INTEGER if integer else mip.CONTINUOUS)
        for name, lo, hi, integer in zip(form.names, form.lower, form.upper, form.integer,
                                         strict=True)
    ]  # fmt: skip
    for r in form.rows:
        expr = mip.xsum(c * x[i] for i, c in zip(r.index, r.coef, strict=True))
        if r.lo == r.hi:
            m.add_constr(expr == r.hi, r.name)
            continue
        if r.hi != float("inf"):
            m.add_constr(expr <= r.hi, r.name)
        if r.lo != -float("inf"):
            m.add_constr(expr >= r.lo, r.name if r.hi == float("inf") else f"{r.name}_lo")
    c, constant = form.objective_vector()
    m.objective = mip.minimize(mip.xsum(float(c[i]) * x[i] for i in np.flatnonzero(c)) + constant)
    return m, x


@dataclass(frozen=True)
class Solution:
    """A solved instance: layer counts per position and bits, each layer's bits, and how the
    solver did (objective in ms-equivalents, best bound, relative gap, seconds)."""

    status: str
    counts: np.ndarray | None  # (N, K) ints
    bits_per_layer: tuple[int, ...] | None
    objective: float | None
    bound: float | None
    gap: float | None
    seconds: float

    @property
    def found(self) -> bool:
        return self.counts is not None

    def stage_bits(self) -> list[list[int]]:
        """Bits of each position's layers, in layer order (empty positions included)."""
        out, i = [], 0
        for row in self.counts:
            size = int(row.sum())
            out.append(list(self.bits_per_layer[i : i + size]))
            i += size
        return out


def warm_start(model: mip.Model, x: list, form: Formulation, counts: np.ndarray,
               bits_per_layer: Sequence[int]) -> None:  # fmt: skip
    """Give the solver a feasible incumbent (counts and layer bits; the rest it completes)."""
    start = [(x[i], float(counts[c])) for c, i in form.n.items()]
    start += [(x[i], float(counts[c] > 0)) for c, i in form.h.items()]
    start += [(x[i], float(counts[j].sum() == 1)) for j, i in form.one.items()]
    if form.z:
        layer = 0
        for j, row in enumerate(counts):
            for _ in range(int(row.sum())):
                k = BITS.index(bits_per_layer[layer])
                start += [(x[form.z[layer, j, k]], 1.0)]
                layer += 1
    model.start = start


def solve(
    model: mip.Model, x: list, form: Formulation, options: SolverOptions,
    time_limit_s: float | None = None,
) -> Solution:  # fmt: skip
    """Solve; a time limit keeps the best incumbent (status FEASIBLE) with its bound and gap."""
    model.max_mip_gap = options.gap
    model.max_mip_gap_abs = 1e-9
    start = time.perf_counter()
    status = model.optimize(max_seconds=time_limit_s or options.time_limit_s)
    seconds = time.perf_counter() - start
    bound = (
        float(model.objective_bound) if model.num_solutions or status.name == "OPTIMAL" else None
    )
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return Solution(status.name, None, None, None, bound, None, seconds)
    inst = form.instance
    N, K = inst.num_positions, len(BITS)
    counts = np.zeros((N, K), dtype=int)
    for (j, k), i in form.n.items():
        counts[j, k] = int(round(x[i].x))
    if form.z:  # the exact layer assignment
        bits = [0] * inst.num_layers
        for (i, _, k), v in form.z.items():
            if x[v].x > 0.5:
                bits[i] = BITS[k]
    else:
        bits = bits_from_counts(counts, inst.omega)
    objective = float(model.objective_value)
    gap = abs(objective - bound) / max(abs(objective), 1e-12)
    return Solution(status.name, counts, tuple(bits), objective, bound, gap, seconds)


def bits_from_counts(counts: np.ndarray, omega: np.ndarray) -> list[int]:
    """Layer bits from counts, each stage's bits placed on its layers at least Σω (exact for
    layer-uniform ω, where any placement is optimal; highest bits first then)."""
    bits: list[int] = []
    start = 0
    for row in counts:
        size = int(row.sum())
        bits += best_placement(omega[start : start + size], row)
        start += size
    return bits


def best_placement(omega: np.ndarray, counts: Sequence[int]) -> list[int]:
    """Bits for the layers of one stage (rows of ``omega``) with ``counts[k]`` layers at
    ``BITS[k]``, minimising Σω: a transportation problem, solved exactly as an assignment."""
    slots = [k for k in reversed(range(len(BITS))) for _ in range(int(counts[k]))]
    if not slots:
        return []
    cost = omega[:, slots]
    if np.allclose(cost, cost[:1], rtol=1e-12, atol=0.0):  # uniform: highest bits first
        return [BITS[k] for k in slots]
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    out = [0] * len(slots)
    for r, c in zip(rows, cols, strict=True):
        out[r] = BITS[slots[c]]
    return out


def solve_instance(
    inst: Instance, options: SolverOptions = DEFAULT_SOLVER,
    start: tuple[np.ndarray, Sequence[int]] | None = None, **formulation,
) -> Solution:  # fmt: skip
    """Formulate (``formulation``: ``segments``, ``layers``), build and solve ``inst``."""
    form = formulate(inst, **formulation)
    model, x = build_model(form, options)
    if start is not None:
        warm_start(model, x, form, *start)
    return solve(model, x, form, options)
