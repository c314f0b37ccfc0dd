"""The ILP of one instance, written once as data: the solver model and its LP bounds read it.

Usage::

    from llmpq.planner.formulation import formulate

    form = formulate(inst, segments=8)           # 8 decode segments; layer-uniform ω: counts only
    form = formulate(inst, layers="exact")       # one segment per step; per-layer ω, exact
    form.lp_bound()            # ≤ the ILP optimum (HiGHS through scipy; inf: infeasible)

The mathematics (positions ``j`` of the order, all used; bitwidths ``k``; layers ``i``; decode
steps ``s = 0 … S−1``, those before the last grouped into segments ``g``)::

    n[j,k] ∈ ℤ≥0   layers at position j with bits k          h[j,k] ∈ {0,1}  j holds bits k
    one[j] ∈ {0,1}  j holds exactly one layer                P ≥ max_j cp[j]  prefill slot
    D[g] ≥ 0        decode time of segment g                 E ≥ 0, T ≥ C     the last step
    t_p[j]   = Σ_k lp[j,k] n[j,k] + fp[j]                    (one prefill micro-batch)
    t_d[j,s] = Σ_k ld[j,k,s] n[j,k] + fd[j,s]                (one decode micro-batch, step s)
    cover          Σ_jk n[j,k] = L;   use  Σ_k n[j,k] ≥ 1
    hold           n[j,k] ≤ U[j,k] h[j,k]  (U: the most layers at bits k that fit j alone)
    one            Σ_k n[j,k] ≤ 1 + (L − 1)(1 − one[j])
    memory         Σ_k' mem[φ,j,k'] n[j,k'] + base[φ,j,k] h[j,k] − held[φ,j] one[j] ≤ cap[j]
                   for both phase peaks φ and every k: the exact memory model, whose workspace
                   is the largest of the held bitwidths' (time_model.memory_coefficients)
    prefill_slot   P ≥ t_p[j]
    decode_round   D[g] ≥ Σ_{s∈g} (Σ_j t_d[j,s] + Σ_j cd[j])
    decode_slot    D[g] ≥ m_d Σ_{s∈g} t_d[j,s],  D[g] ≥ m_d |g| C   (m_d > 1; C = max_j cd[j])
    last_step      E ≥ Σ_j t_d[j,S−1] + Σ_j cd[j] + (m_d − 1) T,  T ≥ t_d[j,S−1]
    symmetry       Σ_k n[j,k] ≥ Σ_k n[j',k] for interchangeable positions j < j' (counts only)
    budget         Σ ω ≤ B
    minimize       Σ_j (t_p[j] + cp[j]) + (m_p − 1) P + Σ_g D[g] + E + θ Σ ω

The closed form (:func:`llmpq.planner.time_model.decode_pipeline_ms`) sums
``max(R_s, m_d T_s)`` over the steps (``R_s`` the round trip, ``T_s`` the bottleneck) and adds
the fill ``min((m_d − 1) T, R − T)`` at the last step; since ``max(R, m_d T) + min(m_d T, R) − T
= R + (m_d − 1) T``, the last step with its fill is the convex ``last_step`` row — exact, with
no binaries. A segment of several earlier steps takes the max of the sums, which is never more
than the sum of the maxes (a lower bound, equal when one term binds throughout the segment).
With one segment per step the objective *is* the closed form; the search refines segments at
the regime changes of the solutions it finds (:mod:`.search`).

Quality: ``layers="counts"`` (ω the same for every layer: Σω = Σ ω[k] n[j,k], exact);
``"relaxed"`` (per-layer ω: bits assigned to layers ``y[i,k]`` without tying them to positions,
a lower bound at the compact model's size); ``"exact"`` (binaries ``z[i,j,k]``, layers through
the positions in order: ``Σ_{j'≤j} x[i,j'] ≥ Σ_{j'≤j} x[i+1,j']``, O(L·N) rows).

Every row carries a ``part``: ``shared`` (assignment, quality), ``prefill`` or ``decode`` (that
phase's memory peak and time rows: they depend on that phase's micro-batch size only). The
objective is split the same way, the quality term going with decode, so that an LP over one
part is a bound on that part (:mod:`llmpq.planner.bounds` batches such bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from llmpq.planner.instance import Instance

GiB = 1024**3
LAYERS = ("counts", "relaxed", "exact")
PARTS = ("both", "prefill", "decode")


@dataclass(frozen=True, eq=False)
class Row:
    name: str
    part: str  # shared | prefill | decode
    index: tuple[int, ...]
    coef: tuple[float, ...]
    lo: float
    hi: float


@dataclass(eq=False)
class Formulation:
    """Variables (name, bounds, integrality), rows and the two objective parts of one ILP."""

    instance: Instance
    layers: str
    segments: tuple[tuple[int, int], ...]
    names: list[str] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    costs: dict = field(default_factory=lambda: {"prefill": {}, "decode": {}})
    constant: dict = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    n: dict = field(default_factory=dict)  # (j, k) -> variable index
    h: dict = field(default_factory=dict)
    one: dict = field(default_factory=dict)  # j -> index (positions whose input is held)
    z: dict = field(default_factory=dict)  # (i, j, k) -> index ("exact")

    # ------------------------------------------------------------------ building
    def var(self, name: str, lo: float = 0.0, hi: float = math.inf, integer: bool = False) -> int:
        self.names.append(name)
        self.lower.append(lo)
        self.upper.append(hi)
        self.integer.append(integer)
        return len(self.names) - 1

    def row(self, name: str, part: str, terms: dict, lo: float = -math.inf, hi: float = math.inf):
        terms = {i: c for i, c in terms.items() if c != 0.0}
        self.rows.append(Row(name, part, tuple(terms), tuple(terms.values()), lo, hi))

    def cost(self, part: str, index: int, value: float) -> None:
        self.costs[part][index] = self.costs[part].get(index, 0.0) + value

    # ------------------------------------------------------------------ the LP relaxation
    def objective_vector(self, part: str = "both") -> tuple[np.ndarray, float]:
        c, constant = np.zeros(len(self.names)), 0.0
        for p in ("prefill", "decode"):
            if part in ("both", p):
                for i, v in self.costs[p].items():
                    c[i] += v
                constant += self.constant[p]
        return c, constant

    def lp_bound(self, part: str = "both") -> float:
        """The LP optimum over ``part``'s rows and objective (integrality dropped): a lower
        bound on that part of the ILP's optimum; inf when even the LP is infeasible."""
        if part not in PARTS:
            raise ValueError(part)
        keep = [r for r in self.rows if part == "both" or r.part in ("shared", part)]
        c, constant = self.objective_vector(part)
        ub_rows, ub_rhs, eq_rows, eq_rhs = [], [], [], []
        for r in keep:
            if r.lo == r.hi:
                eq_rows.append(r)
                eq_rhs.append(r.hi)
                continue
            if math.isfinite(r.hi):
                ub_rows.append((r, 1.0))
                ub_rhs.append(r.hi)
            if math.isfinite(r.lo):
                ub_rows.append((r, -1.0))
                ub_rhs.append(-r.lo)
        nv = len(self.names)
        res = linprog(
            c, A_ub=_sparse([r for r, _ in ub_rows], [s for _, s in ub_rows], nv) if ub_rows
            else None, b_ub=np.array(ub_rhs) if ub_rows else None,
            A_eq=_sparse(eq_rows, [1.0] * len(eq_rows), nv) if eq_rows else None,
            b_eq=np.array(eq_rhs) if eq_rows else None,
            bounds=list(zip(self.lower, [None if math.isinf(u) else u for u in self.upper],
                            strict=True)), method="highs",
        )  # fmt: skip
        return float(res.fun) + constant if res.status == 0 else math.inf


def _sparse(rows: list[Row], signs: list[float], nv: int) -> csr_matrix:
    data, cols, ptr = [], [], [0]
    for r, sign in zip(rows, signs, strict=True):
        data.extend(sign * c for c in r.coef)
        cols.extend(r.index)
        ptr.append(len(cols))
    return csr_matrix((data, cols, ptr), shape=(len(rows), nv))


def decode_segments(steps: int, count: int) -> tuple[tuple[int, int], ...]:
    """``count`` contiguous, near-equal ranges of the decode steps before the last (fewer if
    there are fewer steps)."""
    body = max(steps - 1, 0)
    if body == 0:
        return ()
    count = max(1, min(count, body))
    edges = np.linspace(0, body, count + 1).round().astype(int)
    return tuple((int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a)


def split_segments(segments, regimes: np.ndarray) -> tuple[tuple[int, int], ...]:
    """``segments`` split wherever the binding term of a solution (``regimes``, one per step
    before the last) changes inside one: a finer partition, so a bound that does not fall."""
    out = []
    for a, b in segments:
        start = a
        for s in range(a + 1, b):
            if regimes[s] != regimes[s - 1]:
                out.append((start, s))
                start = s
        out.append((start, b))
    return tuple(out)


def formulate(inst: Instance, segments=None, layers: str | None = None) -> Formulation:
    """The ILP of ``inst`` as data (module docstring). ``segments``: how many decode segments
    (near-equal), or the ranges themselves, or None: one per step (exact); ``layers``: counts |
    relaxed | exact (default: counts when ω is the same for every layer, else exact)."""
    layers = layers or ("exact" if inst.per_layer else "counts")
    if layers not in LAYERS:
        raise ValueError(layers)
    if not inst.per_layer:
        layers = "counts"
    N, L = inst.num_positions, inst.num_layers
    K = inst.lp.shape[1]
    S = inst.steps
    if segments is None or isinstance(segments, int):
        segments = decode_segments(S, segments or S)
    f = Formulation(inst, layers, tuple(segments))
    most = inst.most_layers()
    cells = [(j, k) for j in range(N) for k in range(K) if inst.allowed(j, k) and most[j, k] >= 1]
    for j, k in cells:
        f.n[j, k] = f.var(f"n_{j}_{k}", 0, int(most[j, k]), integer=True)
    for j, k in cells:
        f.h[j, k] = f.var(f"h_{j}_{k}", 0, 1, integer=True)
    for j in range(N):
        if inst.mem_held[:, j].max() > 0 and L > 1:
            f.one[j] = f.var(f"one_{j}", 0, 1, integer=True)
    mine = {j: [(jj, k) for jj, k in cells if jj == j] for j in range(N)}

    # assignment and memory
    f.row("cover", "shared", {f.n[c]: 1.0 for c in cells}, L, L)
    for j in range(N):
        counts = {f.n[c]: 1.0 for c in mine[j]}
        f.row(f"use_{j}", "shared", counts, lo=1.0)
        for c in mine[j]:
            f.row(f"hold_{j}_{c[1]}", "shared", {f.n[c]: 1.0, f.h[c]: -float(most[c])}, hi=0.0)
        if j in f.one:
            f.row(f"one_{j}", "shared", counts | {f.one[j]: float(L - 1)}, hi=float(L))
        for p, phase in enumerate(("prefill", "decode")):
            linear = {f.n[c]: inst.mem_layer[p][c] / GiB for c in mine[j]}
            held = {f.one[j]: -inst.mem_held[p, j] / GiB} if j in f.one else {}
            cap = inst.cap[j] / GiB
            least = min(inst.mem_base[p][c] for c in mine[j]) / GiB if mine[j] else 0.0
            f.row(f"memory_{phase}_{j}_least", phase, linear | held, hi=cap - least)
            for c in mine[j]:
                base = {f.h[c]: inst.mem_base[p][c] / GiB}
                f.row(f"memory_{phase}_{j}_{c[1]}", phase, linear | held | base, hi=cap)
    if layers != "exact":
        for j, jj in inst.interchangeable():
            f.row(f"symmetry_{j}_{jj}", "shared",
                  {f.n[c]: 1.0 for c in mine[j]} | {f.n[c]: -1.0 for c in mine[jj]}, lo=0.0)  # fmt: skip

    # prefill: Σ_j (t_p + cp) + (m_p − 1) P
    P = f.var("prefill_slot", lo=float(inst.cp.max()))
    for j in range(N):
        f.row(f"prefill_slot_{j}", "prefill",
              {f.n[c]: inst.lp[c] for c in mine[j]} | {P: -1.0}, hi=-inst.fp[j])  # fmt: skip
    for c in cells:
        f.cost("prefill", f.n[c], inst.lp[c])
    f.cost("prefill", P, inst.m_p - 1.0)
    f.constant["prefill"] = float(np.sum(inst.fp + inst.cp))

    # decode: Σ_g D[g] + E
    m_d, cd = inst.m_d, inst.cd
    for g, (a, b) in enumerate(f.segments):
        ld = inst.ld[:, :, a:b].sum(axis=2)
        fd = inst.fd[:, a:b].sum(axis=1)
        D = f.var(f"decode_{g}", lo=m_d * (b - a) * float(cd.max()) if m_d > 1 else 0.0)
        f.cost("decode", D, 1.0)
        f.row(f"decode_round_{g}", "decode", {f.n[c]: ld[c] for c in cells} | {D: -1.0},
              hi=-(float(fd.sum()) + (b - a) * float(cd.sum())))  # fmt: skip
        if m_d > 1:
            for j in range(N):
                f.row(f"decode_slot_{g}_{j}", "decode",
                      {f.n[c]: m_d * ld[c] for c in mine[j]} | {D: -1.0},
                      hi=-m_d * float(fd[j]))  # fmt: skip
    if S > 0:
        _last_step_rows(f, inst, cells, mine)

    # quality
    quality = _quality_rows(f, inst, cells)
    for i, w in quality.items():
        f.cost("decode", i, inst.theta * w)
    if inst.budget is not None:
        f.row("budget", "shared", quality, hi=inst.budget)
    return f


def _last_step_rows(f: Formulation, inst: Instance, cells, mine) -> None:
    """The last step with the fill: E ≥ R + (m_d − 1) T, T ≥ every t_j and C (module docstring)."""
    N, m_d = inst.num_positions, inst.m_d
    ld, fd = inst.ld[:, :, -1], inst.fd[:, -1]
    E = f.var("decode_last")
    f.cost("decode", E, 1.0)
    terms = {f.n[c]: ld[c] for c in cells} | {E: -1.0}
    if m_d > 1:
        T = f.var("bottleneck_last", lo=float(inst.cd.max()))
        terms[T] = m_d - 1.0
        for j in range(N):
            f.row(f"bottleneck_last_{j}", "decode",
                  {f.n[c]: ld[c] for c in mine[j]} | {T: -1.0}, hi=-float(fd[j]))  # fmt: skip
    f.row("decode_last", "decode", terms, hi=-(float(fd.sum()) + float(inst.cd.sum())))


def _quality_rows(f: Formulation, inst: Instance, cells) -> dict:
    """Σω as {variable: coefficient}, with the layer-assignment rows it needs."""
    N, L = inst.num_positions, inst.num_layers
    if f.layers == "counts":
        return {f.n[c]: float(inst.omega[0, c[1]]) for c in cells}
    ks = sorted({k for _, k in cells})
    quality: dict = {}
    if f.layers == "relaxed":
        y = {(i, k): f.var(f"y_{i}_{k}", 0, 1) for i in range(L) for k in ks}
        for i in range(L):
            f.row(f"assign_{i}", "shared", {y[i, k]: 1.0 for k in ks}, 1.0, 1.0)
        for k in ks:
            f.row(f"bits_total_{k}", "shared", {y[i, k]: 1.0 for i in range(L)}
                  | {f.n[c]: -1.0 for c in cells if c[1] == k}, 0.0, 0.0)  # fmt: skip
        return {y[i, k]: float(inst.omega[i, k]) for i, k in y}
    for i in range(L):
        for j, k in cells:
            f.z[i, j, k] = f.var(f"z_{i}_{j}_{k}", 0, 1, integer=True)
    for i in range(L):
        f.row(f"assign_{i}", "shared", {f.z[i, j, k]: 1.0 for j, k in cells}, 1.0, 1.0)
    for j, k in cells:
        f.row(f"count_{j}_{k}", "shared",
              {f.n[j, k]: 1.0} | {f.z[i, j, k]: -1.0 for i in range(L)}, 0.0, 0.0)  # fmt: skip
    for i in range(L - 1):
        for j in range(N - 1):
            terms: dict = {}
            for jj, k in cells:
                if jj <= j:
                    terms[f.z[i, jj, k]] = terms.get(f.z[i, jj, k], 0.0) + 1.0
                    terms[f.z[i + 1, jj, k]] = terms.get(f.z[i + 1, jj, k], 0.0) - 1.0
            f.row(f"in_order_{i}_{j}", "shared", terms, lo=0.0)
    f.row("first_layer_first", "shared", {f.z[0, 0, k]: 1.0 for j, k in cells if j == 0}, 1, 1)
    f.row("last_layer_last", "shared",
          {f.z[L - 1, N - 1, k]: 1.0 for j, k in cells if j == N - 1}, 1.0, 1.0)  # fmt: skip
    for (i, _, k), v in f.z.items():
        quality[v] = float(inst.omega[i, k])
    return quality
