"""The joint ILP for one device order and one micro-batch choice, in python-mip.

Usage::

    from llmpq.planner.ilp import instance_for, build_model, solve

    inst = instance_for(problem, order, micro_batch)   # numbers only: costs at each position
    model, v = build_model(inst)                        # the mathematics, nothing solved
    result = solve(model, v, inst, SolverOptions(time_limit_s=10, gap=0.01))
    result.counts            # layers per (position, bits); result.bits_per_layer

The mathematics (positions ``j`` of the order, bitwidths ``k``, layers ``i``)::

    variables  n[j,k] ∈ ℤ≥0   layers at position j with bits k
               u[j]   ∈ {0,1} position j holds layers (the two ends always do)
               z[i,j,k] ∈ {0,1}  only when ω differs between layers: layer i at (j, k)
               P, D ≥ 0        prefill bottleneck, decode time
    t_p[j] = Σ_k lp[j,k] n[j,k] + fp[j] u[j]          (one prefill micro-batch)
    t_d[j] = Σ_k ld[j,k] n[j,k] + fd[j] u[j]          (one decode micro-batch, Σ over steps)
    cover          Σ_jk n[j,k] = L
    use            u[j] ≤ Σ_k n[j,k] ≤ L u[j];   u[0] = u[N−1] = 1
    memory         Σ_k mem[j,k] n[j,k] + mfix[j] u[j] ≤ cap[j]       (decode and prefill peaks)
    prefill_slot   P ≥ t_p[j],  P ≥ cp[j] u[j]
    decode_round   D ≥ Σ_j (t_d[j] + S cd[j] u[j])                      (S = gen_len − 1)
    decode_slot    D ≥ m_d t_d[j],  D ≥ m_d S cd[j] u[j]
    budget         Σ ω n ≤ B                                             (when a budget is set)
    minimize       Σ_j (t_p[j] + cp[j] u[j]) + (m_p − 1) P + D + θ Σ ω n

With layer-specific ω the assignment is explicit: ``Σ_jk z[i,j,k] = 1``, ``n[j,k] = Σ_i
z[i,j,k]``, and layers run through the positions in order — ``Σ_{j'≤j} x[i,j'] ≥ Σ_{j'≤j}
x[i+1,j']`` with ``x[i,j] = Σ_k z[i,j,k]`` (O(L·N) rows, not the O(L·N²) pairwise rows of the
original). With the same ω for every layer (analytic indicators) only the counts matter and the
``z`` are dropped: the compact model has N·K integers and is exact, because layers are identical
apart from ω and any count vector is realised by contiguous blocks.

The decode term aggregates the steps (``max`` of sums ≤ sum of ``max``es; equal when the binding
term does not change during generation) and leaves out the fill (at most one round trip); the
plan's reported figures come from :func:`llmpq.planner.time_model.evaluate_stages`.
Memory is the memory model's two peaks, each linear in the counts: while prefilling (KV at the
prompt length, the prefill workspace) and while decoding (full-context KV, the decode
workspace); the workspaces are those of a stage holding every allowed bitwidth (an upper bound
by the quantized MLP's extra temporaries). The final plan is checked with the exact model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import mip
import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.errors import UserError
from llmpq.plan import MicroBatch
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.time_model import stage_coefficients

GiB = 1024**3
BIG_MS = 1e12  # a cost that never wins: a bitwidth a device cannot run


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


@dataclass(frozen=True, eq=False)
class Instance:
    """The numbers of one ILP: per position ``j`` and bitwidth ``k`` (NaN: not allowed)."""

    devices: tuple[ClusterDevice, ...]
    micro_batch: MicroBatch
    num_layers: int
    lp: np.ndarray  # (N, K) ms per layer, one prefill micro-batch
    ld: np.ndarray  # (N, K) ms per layer, one decode micro-batch, Σ over steps
    fp: np.ndarray  # (N,) fixed prefill ms of a used stage
    fd: np.ndarray  # (N,) fixed decode ms of a used stage, Σ over steps
    cp: np.ndarray  # (N,) prefill transfer ms
    cd: np.ndarray  # (N,) decode transfer ms, one step
    mem: np.ndarray  # (N, K) bytes per layer while decoding (full-context KV)
    mfix: np.ndarray  # (N,) fixed bytes of a used stage while decoding
    mem_p: np.ndarray  # (N, K) bytes per layer while prefilling (prompt KV)
    mfix_p: np.ndarray  # (N,) fixed bytes of a used stage while prefilling
    cap: np.ndarray  # (N,) device memory, bytes
    steps: int  # decode steps: gen_len − 1
    m_p: int
    m_d: int
    omega: np.ndarray  # (L, K)
    theta: float
    budget: float | None

    @property
    def num_positions(self) -> int:
        return len(self.devices)

    @property
    def per_layer(self) -> bool:
        return not np.allclose(self.omega, self.omega[:1], rtol=1e-12, atol=0.0)

    def allowed(self, j: int, k: int) -> bool:
        return bool(np.isfinite(self.lp[j, k]) and np.isfinite(self.mem[j, k]))


def instance_for(
    problem: PlanningProblem, order: Sequence[ClusterDevice], micro_batch: MicroBatch,
    coefficients=None,
) -> Instance:  # fmt: skip
    """Price every position of ``order`` (the last sends token ids back to the first).
    ``coefficients(device, mb, is_first, is_last, next)`` may be a cache of
    :func:`stage_coefficients`."""
    get = coefficients or (
        lambda d, mb, first, last, nxt: stage_coefficients(
            problem, d, mb, is_first=first, is_last=last, next_device=nxt
        )
    )
    n = len(order)
    coefs = [get(order[j], micro_batch, j == 0, j == n - 1, order[(j + 1) % n]) for j in range(n)]
    w = problem.workload
    return Instance(
        devices=tuple(order),
        micro_batch=micro_batch,
        num_layers=problem.num_layers,
        lp=np.array([c.prefill_layer_ms for c in coefs]),
        ld=np.array([c.decode_layer_ms.sum(axis=1) for c in coefs]),
        fp=np.array([c.prefill_fixed_ms for c in coefs]),
        fd=np.array([c.decode_fixed_ms.sum() for c in coefs]),
        cp=np.array([c.prefill_send_ms for c in coefs]),
        cd=np.array([c.decode_send_ms for c in coefs]),
        mem=np.array([c.layer_bytes for c in coefs]),
        mfix=np.array([c.fixed_bytes for c in coefs], dtype=np.float64),
        mem_p=np.array([c.prefill_layer_bytes for c in coefs]),
        mfix_p=np.array([c.prefill_fixed_bytes for c in coefs], dtype=np.float64),
        cap=np.array([c.memory_bytes for c in coefs], dtype=np.float64),
        steps=w.gen_len - 1,
        m_p=math.ceil(w.batch_size / micro_batch.prefill_size),
        m_d=micro_batch.decode_count,
        omega=problem.omega,
        theta=problem.theta,
        budget=problem.omega_budget,
    )


@dataclass(frozen=True)
class Variables:
    n: dict  # (j, k) -> Var
    u: list
    z: dict  # (i, j, k) -> Var, empty in the compact model
    prefill_slot: mip.Var
    decode: mip.Var


def build_model(
    inst: Instance, solver: SolverOptions = DEFAULT_SOLVER, *, relaxed_layers: bool = False
) -> tuple[mip.Model, Variables]:
    """The ILP of ``inst`` as a python-mip model (not solved). ``relaxed_layers`` (layer-specific
    ω only): assign bits to layers without tying them to positions — a relaxation whose optimum
    bounds the exact model's from below, at the compact model's size."""
    N, K, L = inst.num_positions, len(BITS), inst.num_layers
    m = mip.Model(sense=mip.MINIMIZE, solver_name=solver.name.upper())
    m.verbose = 0
    m.threads = solver.threads
    m.seed = solver.seed
    cells = [(j, k) for j in range(N) for k in range(K) if inst.allowed(j, k)]
    n = {(j, k): m.add_var(f"n_{j}_{k}", lb=0, ub=L, var_type=mip.INTEGER) for j, k in cells}
    u = [m.add_var(f"u_{j}", var_type=mip.BINARY) for j in range(N)]
    P = m.add_var("prefill_slot", lb=0)
    D = m.add_var("decode", lb=0)
    z: dict = {}
    row = {j: [(j2, k) for j2, k in cells if j2 == j] for j in range(N)}

    m.add_constr(mip.xsum(n.values()) == L, "cover")
    for j in range(N):
        layers_j = mip.xsum(n[c] for c in row[j])
        m.add_constr(layers_j <= L * u[j], f"use_upper_{j}")
        m.add_constr(layers_j >= u[j], f"use_lower_{j}")
        for phase, mem, fixed in (("decode", inst.mem, inst.mfix),
                                  ("prefill", inst.mem_p, inst.mfix_p)):  # fmt: skip
            m.add_constr(
                mip.xsum(mem[c] / GiB * n[c] for c in row[j]) + fixed[j] / GiB * u[j]
                <= inst.cap[j] / GiB, f"memory_{phase}_{j}",
            )  # fmt: skip
    for j in (0, N - 1):
        m.add_constr(u[j] == 1, f"end_used_{j}")

    t_p = {j: mip.xsum(inst.lp[c] * n[c] for c in row[j]) + inst.fp[j] * u[j] for j in range(N)}
    t_d = {j: mip.xsum(inst.ld[c] * n[c] for c in row[j]) + inst.fd[j] * u[j] for j in range(N)}
    for j in range(N):
        m.add_constr(P >= t_p[j], f"prefill_slot_{j}")
        m.add_constr(P >= inst.cp[j] * u[j], f"prefill_link_{j}")
        m.add_constr(D >= inst.m_d * t_d[j], f"decode_slot_{j}")
        m.add_constr(D >= inst.m_d * inst.steps * inst.cd[j] * u[j], f"decode_link_{j}")
    m.add_constr(
        D >= mip.xsum(t_d[j] + inst.steps * inst.cd[j] * u[j] for j in range(N)), "decode_round"
    )

    if inst.per_layer and relaxed_layers:
        y = {(i, k): m.add_var(f"y_{i}_{k}", lb=0, ub=1)
             for i in range(L) for k in range(K) if any((j, k) in n for j in range(N))}  # fmt: skip
        for i in range(L):
            m.add_constr(mip.xsum(y[i, k] for k in range(K) if (i, k) in y) == 1, f"assign_{i}")
        for k in sorted({k for _, k in y}):
            m.add_constr(
                mip.xsum(y[i, k] for i in range(L)) == mip.xsum(n[j, k] for j, k2 in cells if k2 == k),
                f"bits_total_{k}",
            )  # fmt: skip
        quality = mip.xsum(float(inst.omega[i, k]) * y[i, k] for i, k in y)
    elif inst.per_layer:
        z = {(i, j, k): m.add_var(f"z_{i}_{j}_{k}", var_type=mip.BINARY)
             for i in range(L) for j, k in cells}  # fmt: skip
        for i in range(L):
            m.add_constr(mip.xsum(z[i, j, k] for j, k in cells) == 1, f"assign_{i}")
        for j, k in cells:
            m.add_constr(n[j, k] == mip.xsum(z[i, j, k] for i in range(L)), f"count_{j}_{k}")
        for i in range(L - 1):
            for j in range(N - 1):
                m.add_constr(
                    mip.xsum(z[i, j2, k] for j2, k in cells if j2 <= j)
                    >= mip.xsum(z[i + 1, j2, k] for j2, k in cells if j2 <= j),
                    f"in_order_{i}_{j}",
                )  # fmt: skip
        quality = mip.xsum(float(inst.omega[i, k]) * z[i, j, k] for i, j, k in z)
    else:
        quality = mip.xsum(float(inst.omega[0, k]) * n[j, k] for j, k in cells)
    if inst.budget is not None:
        m.add_constr(quality <= inst.budget, "budget")

    prefill = mip.xsum(t_p[j] + inst.cp[j] * u[j] for j in range(N)) + (inst.m_p - 1) * P
    m.objective = mip.minimize(prefill + D + inst.theta * quality)
    return m, Variables(n, u, z, P, D)


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


def warm_start(model: mip.Model, v: Variables, counts: np.ndarray, bits_per_layer) -> None:
    """Give the solver a feasible incumbent (the heuristic's, or a baseline's)."""
    start = [(v.n[c], float(counts[c])) for c in v.n]
    start += [(v.u[j], float(counts[j].sum() > 0)) for j in range(len(v.u))]
    if v.z:
        layer = 0
        for j, row in enumerate(counts):
            for _ in range(int(row.sum())):
                k = BITS.index(bits_per_layer[layer])
                start += [(v.z[layer, j, k], 1.0)]
                layer += 1
    model.start = start


def solve(
    model: mip.Model, v: Variables, inst: Instance, options: SolverOptions,
    time_limit_s: float | None = None,
) -> Solution:  # fmt: skip
    """Solve; a time limit keeps the best incumbent (status FEASIBLE) with its bound and gap."""
    model.max_mip_gap = options.gap
    model.max_mip_gap_abs = 1e-9
    start = time.perf_counter()
    status = model.optimize(max_seconds=time_limit_s or options.time_limit_s)
    seconds = time.perf_counter() - start
    if status not in (mip.OptimizationStatus.OPTIMAL, mip.OptimizationStatus.FEASIBLE):
        return Solution(status.name, None, None, None, None, None, seconds)
    N, K = inst.num_positions, len(BITS)
    counts = np.zeros((N, K), dtype=int)
    for (j, k), var in v.n.items():
        counts[j, k] = int(round(var.x))
    if v.z:  # the exact layer assignment
        bits = [0] * inst.num_layers
        for (i, _, k), var in v.z.items():
            if var.x > 0.5:
                bits[i] = BITS[k]
    else:
        bits = bits_from_counts(counts, inst.omega)
    objective, bound = float(model.objective_value), float(model.objective_bound)
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
    inst: Instance, options: SolverOptions, start: tuple[np.ndarray, Sequence[int]] | None = None
) -> Solution:
    model, v = build_model(inst, options)
    if start is not None:
        warm_start(model, v, *start)
    return solve(model, v, inst, options)
