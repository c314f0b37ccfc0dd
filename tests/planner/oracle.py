"""A brute-force oracle for the planner: the exact optimum of small problems; llmpq judged on it.

Usage::

    from tests.planner.oracle import brute_force, judge, random_instance   # in tests: .oracle

    inst = random_instance(seed=7)              # 2–3 devices, 4–6 layers, a θ or a Σω budget
    best = brute_force(inst.problem)            # OraclePlan, or None when no plan fits
    best.value, best.stages, best.micro_batch   # value: makespan_ms + θ·Σω (the closed form)
    verdict = judge(inst, SolverOptions(time_limit_s=30, gap=0.01))
    verdict.outcome, verdict.failures           # "optimal" | "within_gap" | ... (OUTCOMES)

The search space (what the planner searches too): every nonempty ordered subset of the devices
(identical devices — same type, host, memory and cores — are not permuted among themselves),
every contiguous split of the L layers with ≥ 1 layer per used device, every allowed bitwidth
per layer, every micro-batch choice of :func:`~llmpq.planner.candidates.micro_batches`. A plan is
priced by :func:`~llmpq.planner.evaluate_stages`: feasible iff every stage fits and Σω is within
the budget; value ``makespan_s · 1e3 + θ · Σω`` (ms).

Why the enumeration is exact without pricing 4^L bit vectors: layers are identical in cost, so
for a fixed (order, split, micro-batch) a stage's time and memory depend only on how many of its
layers run at each bitwidth (its count vector); Σω is the only thing that depends on which layer
gets which bits, and it is a sum over layers. So each stage's count vectors are enumerated, each
priced once (its memory by the exact model, its prefill and per-decode-step times), and given the
least Σω its layers can have with those counts (an assignment problem, solved exactly). Every
combination of count vectors over the stages is then priced at once with the closed-form pipeline
formulas (numpy broadcasting). The least-Σω placement is the right one both under θ ≥ 0 (it has
the least value) and under a budget (if any placement of those counts meets it, that one does),
as time and memory do not depend on placement. A stage's prefill prices depend on the prefill
micro-batch size only and its decode prices on the decode size only, so each stage is priced
for a few micro-batches that between them cover every size. The optimum found is re-priced by a
plain ``evaluate_stages`` call, and a few random points of the space are priced both ways
(``check_samples``): any disagreement between this module's pricing and ``evaluate_stages``
raises :class:`OracleError` rather than judging the planner on wrong numbers.
"""

from __future__ import annotations

import functools
import gc
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import xarray as xr
from scipy.optimize import linear_sum_assignment

from llmpq.cluster import Cluster, ClusterDevice
from llmpq.costmodel.memory import stage_memory
from llmpq.errors import UserError
from llmpq.models.spec import ModelSpec, model_spec
from llmpq.plan import MicroBatch
from llmpq.planner import SolverOptions, evaluate_stages, make_plan, planning_problem
from llmpq.planner.candidates import micro_batches
from llmpq.planner.check import check_plan
from llmpq.planner.problem import PlanningProblem
from llmpq.planner.time_model import stage_coefficients
from llmpq.workload import Workload

BITS = (3, 4, 8, 16)  # column order of problem.omega
REL_TOL = 1e-6  # certificate checks (the tolerance)
BUDGET_TOL = 1e-9  # Σω ≤ budget · (1 + BUDGET_TOL)
PRICE_TOL = 1e-9  # this module's pricing against evaluate_stages
GAP_TARGET = 0.01
OPTIONS = SolverOptions(time_limit_s=60.0, gap=GAP_TARGET)

MODELS = ("opt-1.3b", "bloom-560m", "llama-2-7b", "mistral-7b")
DEVICE_TYPES = ("T4", "V100-16G", "V100-32G", "A100-40G", "A10", "L4", "P100-16G")
OUTCOMES = {
    "optimal": "llmpq's plan is the optimum",
    "within_gap": "within its reported gap",
    "false_certificate": "worse than the optimum by more than its reported gap (false certificate)",
    "false_infeasible": "cannot / infeasible claimed although a plan exists",
    "no_plan_ok": "no plan exists and llmpq says so",
    "planner_error": "planner crashed, or its plan is invalid (does not fit, over budget)",
    "below_oracle": "llmpq's plan beats the oracle (an oracle bug, or a plan outside the space)",
}


class OracleError(AssertionError):
    """The oracle's own pricing disagrees with evaluate_stages: fix the oracle, not the planner."""


# ----------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class OraclePlan:
    """The optimum of the search space: stages in pipeline order as (device, bits per layer)."""

    value: float  # makespan_ms + θ·Σω, re-priced by evaluate_stages
    makespan_s: float
    sum_omega: float
    micro_batch: MicroBatch
    stages: tuple[tuple[ClusterDevice, tuple[int, ...]], ...]
    combinations: int  # (order, split, count vectors, micro-batch) points priced
    seconds: float

    def describe(self) -> str:
        parts = [f"{d.name}:{''.join(_bit_char(b) for b in bits)}" for d, bits in self.stages]
        mb = self.micro_batch
        batches = f"mb ({mb.prefill_size}, {mb.decode_size}×{mb.decode_count})"
        return (f"{self.value:.6g} ms = {self.makespan_s * 1e3:.6g} ms + θ·{self.sum_omega:.4g}; "
                f"{' | '.join(parts)}; {batches}")  # fmt: skip


@dataclass(frozen=True, eq=False)
class Instance:
    """A seeded random planning problem and a one-line account of how it was drawn."""

    seed: int
    problem: PlanningProblem
    summary: str


@dataclass(frozen=True)
class Verdict:
    """llmpq's plan on one instance against the oracle's optimum (values in ms)."""

    seed: int
    outcome: str  # a key of OUTCOMES
    optimum: float | None
    value: float | None  # llmpq's plan, re-priced by evaluate_stages
    excess_pct: float | None  # 100 · (value / optimum − 1)
    gap: float | None
    bound: float | None
    objective: float | None
    status: str | None
    planner_s: float
    oracle_s: float
    failures: tuple[str, ...]  # every assertion of the oracle test that does not hold
    summary: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def explain(self) -> str:
        lines = [f"seed {self.seed}: {self.outcome} — {OUTCOMES[self.outcome]}", self.summary]
        lines += [f"  optimum {self.optimum}, llmpq {self.value} (excess {self.excess_pct} %), "
                  f"objective {self.objective}, bound {self.bound}, gap {self.gap}, "
                  f"status {self.status}"]  # fmt: skip
        lines += [f"  fails: {f}" for f in self.failures]
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _bit_char(b: int) -> str:
    return {3: "3", 4: "4", 8: "8", 16: "F"}[b]


# ----------------------------------------------------------------------- pricing (memoised)
@dataclass(frozen=True)
class _MemoSpec(ModelSpec):
    """The same shape; its pure size methods memoised (stage_memory calls them per layer)."""

    @functools.cache  # noqa: B019  (instances are few and live as long as the oracle run)
    def layer_linears(self):
        return super().layer_linears()

    @functools.cache  # noqa: B019
    def layer_weight_bytes(self, bits: int, *args, **kwargs) -> int:
        return super().layer_weight_bytes(bits, *args, **kwargs)


@dataclass(frozen=True)
class _PhaseTimes:
    """One device at one pipeline position, one phase and micro-batch size: ms per layer at
    each allowed bitwidth, what the stage pays regardless, and its outgoing transfer."""

    layer_ms: np.ndarray  # (A,) prefill; (A, steps) decode — A: the device's allowed bits
    fixed_ms: float | np.ndarray
    send_ms: float


@dataclass(frozen=True)
class _StageOptions:
    """The count vectors of one stage that fit its device, priced."""

    counts: np.ndarray  # (m, A) layers at each allowed bitwidth
    prefill_ms: np.ndarray  # (m,) one prefill micro-batch
    decode_ms: np.ndarray  # (m, steps) one decode micro-batch
    omega: np.ndarray  # (m,) least Σω of the stage's layers with these counts
    prefill_send_ms: float
    decode_send_ms: float


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Ordered tuples of ``parts`` non-negative ints summing to ``total``."""
    if parts == 1:
        return [(total,)]
    return [(first, *rest) for first in range(total + 1)
            for rest in _compositions(total - first, parts - 1)]  # fmt: skip


def _splits(total: int, parts: int) -> list[tuple[int, ...]]:
    """Ordered tuples of ``parts`` positive ints summing to ``total``."""
    return [tuple(c + 1 for c in comp) for comp in _compositions(total - parts, parts)]


def device_kind(device: ClusterDevice) -> tuple:
    """Devices of one kind are interchangeable in every price."""
    return (device.type.name, device.host, device.memory_bytes, device.cores or 0)


def pipeline_orders(cluster: Cluster) -> list[tuple[ClusterDevice, ...]]:
    """Every nonempty ordered subset of the devices, one per sequence of kinds."""
    seen, out = set(), []
    for k in range(1, len(cluster.devices) + 1):
        for order in itertools.permutations(cluster.devices, k):
            key = tuple(device_kind(d) for d in order)
            if key not in seen:
                seen.add(key)
                out.append(order)
    return out


class _Pricer:
    """Prices stages from their count vectors, memoised; the time model's pipeline formulas
    applied to whole grids of count-vector combinations at once."""

    def __init__(self, problem: PlanningProblem) -> None:
        self.problem = problem
        self.spec = _MemoSpec(**{f.name: getattr(problem.spec, f.name) for f in fields(ModelSpec)})
        self.allowed = {d.name: problem.allowed_bits(d) for d in problem.cluster.devices}
        self.cols = {name: [BITS.index(b) for b in bits] for name, bits in self.allowed.items()}
        self.batch = problem.workload.batch_size
        self.mbs = micro_batches(problem.workload, num_devices=len(problem.cluster.devices))
        self.prefill_sizes = sorted({mb.prefill_size for mb in self.mbs})
        self.decode_sizes = sorted({mb.decode_size for mb in self.mbs})
        self._times: dict = {}
        self._memory: dict = {}
        self._omega: dict = {}
        self._options: dict = {}
        self._counts: dict = {}

    # -- per stage --------------------------------------------------------------------------
    def _pairs(self) -> list[MicroBatch]:
        """Micro-batches that between them cover every prefill size and every decode size (a
        stage's prefill prices depend on the prefill size only, its decode prices on the decode
        size only: the sampled checks against evaluate_stages hold this to account)."""
        p, d = self.prefill_sizes, self.decode_sizes
        n = max(len(p), len(d))
        return [MicroBatch(p[i % len(p)], d[i % len(d)], 1) for i in range(n)]

    def times(self, device, is_first, is_last, next_device, phase, size) -> _PhaseTimes:
        key = (device.name, is_first, is_last, next_device.name)
        if key not in self._times:
            table = {}
            for mb in self._pairs():
                # times only: the oracle checks memory with stage_memory itself
                coef = stage_coefficients(self.problem, device, mb, is_first=is_first,
                                          is_last=is_last, next_device=next_device,
                                          memory=False)  # fmt: skip
                for ph, sz in (("prefill", mb.prefill_size), ("decode", mb.decode_size)):
                    times = getattr(coef, ph)
                    layer = np.asarray(times.layer_ms, dtype=np.float64)[self.cols[device.name]]
                    table[ph, sz] = _PhaseTimes(layer, times.fixed_ms, float(times.send_ms))
            self._times[key] = table
        return self._times[key][phase, size]

    def count_vectors(self, device: ClusterDevice, n: int) -> np.ndarray:
        key = (len(self.allowed[device.name]), n)
        if key not in self._counts:
            self._counts[key] = np.array(_compositions(n, key[0]), dtype=np.int64)
        return self._counts[key]

    def bits_of(self, device: ClusterDevice, counts: Sequence[int]) -> list[int]:
        return [b for b, c in zip(self.allowed[device.name], counts, strict=True)
                for _ in range(int(c))]  # fmt: skip

    def memory_table(self, device, is_first: bool, is_last: bool, n: int):
        """Bytes of every count vector of an ``n``-layer stage under the exact memory model, split
        by phase: (prefill peak per prefill size (m, P), decode peak per decode size (m, D),
        static + reserve (m,)); rows as in :meth:`count_vectors`."""
        key = (device.type, is_first, is_last, n)
        if key not in self._memory:
            counts = self.count_vectors(device, n)
            pairs = self._pairs()
            prefill = np.zeros((len(counts), len(self.prefill_sizes)), dtype=np.int64)
            decode = np.zeros((len(counts), len(self.decode_sizes)), dtype=np.int64)
            static = np.zeros(len(counts), dtype=np.int64)
            for i, c in enumerate(counts):
                bits = self.bits_of(device, c)
                fixed = set()
                for pair in pairs:
                    m = stage_memory(self.spec, bits, self.problem.workload, pair,
                                     is_first=is_first, is_last=is_last,
                                     device_type=device.type)  # fmt: skip
                    prefill[i, self.prefill_sizes.index(pair.prefill_size)] = m.prefill_peak_bytes
                    decode[i, self.decode_sizes.index(pair.decode_size)] = m.decode_peak_bytes
                    fixed.add(m.static_bytes + m.reserve_bytes)
                    if m.total_bytes != m.static_bytes + m.reserve_bytes + max(
                        m.prefill_peak_bytes, m.decode_peak_bytes
                    ):
                        raise OracleError("stage_memory's total is not static + reserve + peak")
                if len(fixed) != 1:
                    raise OracleError("a stage's static memory depends on its micro-batches")
                static[i] = fixed.pop()
            self._memory[key] = (prefill, decode, static)
        return self._memory[key]

    def fitting(self, device, is_first: bool, is_last: bool, n: int, mb: MicroBatch) -> np.ndarray:
        """Which count vectors of an ``n``-layer stage fit the device (m,) bool."""
        prefill, decode, static = self.memory_table(device, is_first, is_last, n)
        need = static + np.maximum(prefill[:, self.prefill_sizes.index(mb.prefill_size)],
                                   decode[:, self.decode_sizes.index(mb.decode_size)])  # fmt: skip
        return need <= device.memory_bytes

    def least_omega(self, device, start: int, counts: Sequence[int]) -> tuple[float, tuple]:
        """The least Σω of layers start … start + n − 1 holding ``counts`` of the device's
        allowed bits, and the bits of each layer that reach it (an exact assignment)."""
        key = (self.allowed[device.name], start, tuple(int(c) for c in counts))
        if key not in self._omega:
            bits = self.bits_of(device, counts)
            cost = self.problem.omega[start : start + len(bits)][:, [BITS.index(b) for b in bits]]
            rows, cols = linear_sum_assignment(cost)
            order = np.empty(len(bits), dtype=np.int64)
            order[rows] = cols
            self._omega[key] = (float(cost[rows, cols].sum()), tuple(bits[c] for c in order))
        return self._omega[key]

    def stage_options(self, order, j: int, start: int, n: int, mb: MicroBatch) -> _StageOptions:
        device, k = order[j], len(order)
        is_first, is_last, nxt = j == 0, j == k - 1, order[(j + 1) % k]
        key = (device.name, is_first, is_last, nxt.name, start, n, mb.prefill_size,
               mb.decode_size)  # fmt: skip
        if key not in self._options:
            counts = self.count_vectors(device, n)[self.fitting(device, is_first, is_last, n, mb)]
            pre = self.times(device, is_first, is_last, nxt, "prefill", mb.prefill_size)
            dec = self.times(device, is_first, is_last, nxt, "decode", mb.decode_size)
            self._options[key] = _StageOptions(
                counts,
                pre.fixed_ms + counts @ pre.layer_ms if len(counts) else np.zeros(0),
                (np.asarray(dec.fixed_ms, dtype=np.float64) + counts @ dec.layer_ms
                 if len(counts) else np.zeros((0, dec.layer_ms.shape[-1]))),
                np.array([self.least_omega(device, start, c)[0] for c in counts]),
                pre.send_ms, dec.send_ms,
            )  # fmt: skip
        return self._options[key]

    # -- whole pipelines --------------------------------------------------------------------
    def grid_ms(self, options: Sequence[_StageOptions], mb: MicroBatch) -> np.ndarray:
        """Makespan (ms) of every combination of the stages' options: shape (m_1, …, m_k)."""
        k = len(options)

        def axis(a: np.ndarray, j: int, extra: int = 0) -> np.ndarray:
            return a.reshape((1,) * j + (a.shape[0],) + (1,) * (k - 1 - j) + a.shape[1:][:extra])

        t_p = [axis(o.prefill_ms, j) for j, o in enumerate(options)]
        t_d = [axis(o.decode_ms, j, 1) for j, o in enumerate(options)]
        c_p = [o.prefill_send_ms for o in options]
        c_d = [o.decode_send_ms for o in options]
        m_p = math.ceil(self.batch / mb.prefill_size)
        m_d = mb.decode_count
        # prefill (GPipe): Σ_j (t_j + c_j) + (m_p − 1) · max_j max(t_j, c_j)
        prefill = functools.reduce(np.add, [t + c for t, c in zip(t_p, c_p, strict=True)])
        slot = functools.reduce(
            np.maximum, [np.maximum(t, c) for t, c in zip(t_p, c_p, strict=True)]
        )
        prefill = prefill + (m_p - 1) * slot
        steps = options[0].decode_ms.shape[1]
        if steps == 0:
            return prefill
        # decode, per step s: max(R_s, m_d · T_s); plus the fill at the last step
        round_trip = functools.reduce(np.add, t_d) + sum(c_d)
        bottleneck = functools.reduce(
            np.maximum, [np.maximum(t, c) for t, c in zip(t_d, c_d, strict=True)]
        )
        steady = np.maximum(round_trip, m_d * bottleneck).sum(axis=-1)
        fill = np.minimum(
            (m_d - 1) * bottleneck[..., -1], round_trip[..., -1] - bottleneck[..., -1]
        )
        return prefill + steady + fill

    def grid_omega(self, options: Sequence[_StageOptions]) -> np.ndarray:
        k = len(options)
        return functools.reduce(
            np.add,
            [o.omega.reshape((1,) * j + (-1,) + (1,) * (k - 1 - j)) for j, o in enumerate(options)],
        )

    def price(self, stages: Sequence[tuple[ClusterDevice, Sequence[int]]], mb: MicroBatch):
        """(makespan_ms, fits) of explicit stages, by this module's pricing."""
        order = tuple(d for d, _ in stages)
        opts, fits = [], True
        for j, (device, bits) in enumerate(stages):
            counts = [sum(1 for b in bits if b == a) for a in self.allowed[device.name]]
            row = np.flatnonzero((self.count_vectors(device, len(bits)) == counts).all(axis=1))
            fits &= bool(self.fitting(device, j == 0, j == len(stages) - 1, len(bits), mb)[row[0]])
            pre = self.times(device, j == 0, j == len(stages) - 1, order[(j + 1) % len(order)],
                             "prefill", mb.prefill_size)  # fmt: skip
            dec = self.times(device, j == 0, j == len(stages) - 1, order[(j + 1) % len(order)],
                             "decode", mb.decode_size)  # fmt: skip
            c = np.array([counts], dtype=np.float64)
            opts.append(_StageOptions(
                c, pre.fixed_ms + c @ pre.layer_ms,
                np.asarray(dec.fixed_ms, dtype=np.float64) + c @ dec.layer_ms,
                np.zeros(1), pre.send_ms, dec.send_ms,
            ))  # fmt: skip
        return float(self.grid_ms(opts, mb).reshape(-1)[0]), fits


# ------------------------------------------------------------------------------- the oracle
def closed_form(problem: PlanningProblem, ev) -> float:
    """The value a plan is judged by (ms)."""
    return ev.makespan_s * 1e3 + problem.theta * ev.sum_omega


def meets_budget(problem: PlanningProblem, sum_omega: float) -> bool:
    budget = problem.omega_budget
    return budget is None or sum_omega <= budget * (1 + BUDGET_TOL)


def _close(a: float, b: float, tol: float) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1e-12)


def _check_samples(problem: PlanningProblem, pricer: _Pricer, count: int, seed: int) -> None:
    """Random points of the space priced both ways; OracleError on any disagreement."""
    rng = np.random.default_rng(seed)
    orders = [o for o in pipeline_orders(problem.cluster) if len(o) <= problem.num_layers]
    for _ in range(count):
        mb = pricer.mbs[rng.integers(len(pricer.mbs))]
        order = orders[rng.integers(len(orders))]
        splits = _splits(problem.num_layers, len(order))
        sizes = splits[rng.integers(len(splits))]
        stages = [(d, [int(rng.choice(pricer.allowed[d.name])) for _ in range(n)])
                  for d, n in zip(order, sizes, strict=True)]  # fmt: skip
        ms, fits = pricer.price(stages, mb)
        ev = evaluate_stages(problem, stages, mb)
        if not _close(ms, ev.makespan_s * 1e3, PRICE_TOL) or fits != ev.fits:
            raise OracleError(
                f"pricing disagrees with evaluate_stages on {[(d.name, b) for d, b in stages]}, "
                f"{mb}: {ms} ms / fits {fits} against {ev.makespan_s * 1e3} ms / {ev.fits}"
            )


def brute_force(
    problem: PlanningProblem, *, check_samples: int = 6, seed: int = 0
) -> OraclePlan | None:
    """The exact optimum of ``problem`` over the search space (module docstring), or None when
    no plan fits (memory, or the Σω budget)."""
    clock = time.perf_counter()
    pricer = _Pricer(problem)
    _check_samples(problem, pricer, check_samples, seed)
    L, theta, budget = problem.num_layers, problem.theta, problem.omega_budget
    best_value, best = math.inf, None
    combinations = 0
    for mb in pricer.mbs:
        for order in pipeline_orders(problem.cluster):
            if len(order) > L:
                continue
            for sizes in _splits(L, len(order)):
                starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
                options = [pricer.stage_options(order, j, s, n, mb)
                           for j, (s, n) in enumerate(zip(starts, sizes, strict=True))]  # fmt: skip
                if any(len(o.counts) == 0 for o in options):
                    continue
                ms = pricer.grid_ms(options, mb)
                omega = pricer.grid_omega(options)
                value = ms + theta * omega
                if budget is not None:
                    value = np.where(omega <= budget * (1 + BUDGET_TOL), value, np.inf)
                combinations += value.size
                flat = int(np.argmin(value))
                if value.flat[flat] < best_value:
                    best_value = float(value.flat[flat])
                    idx = np.unravel_index(flat, value.shape)
                    best = (
                        mb,
                        order,
                        starts,
                        [o.counts[i] for o, i in zip(options, idx, strict=True)],
                    )
    if best is None:
        return None
    mb, order, starts, counts = best
    stages = tuple((d, pricer.least_omega(d, s, c)[1])
                   for d, s, c in zip(order, starts, counts, strict=True))  # fmt: skip
    ev = evaluate_stages(problem, [(d, list(b)) for d, b in stages], mb)
    value = closed_form(problem, ev)
    if not (
        ev.fits and meets_budget(problem, ev.sum_omega) and _close(value, best_value, PRICE_TOL)
    ):
        raise OracleError(
            f"the optimum re-priced by evaluate_stages: {value} ms (fits {ev.fits}, Σω "
            f"{ev.sum_omega}) against the oracle's {best_value} ms"
        )
    return OraclePlan(value, ev.makespan_s, ev.sum_omega, mb, stages, combinations,
                      time.perf_counter() - clock)  # fmt: skip


# --------------------------------------------------------------------- llmpq against the oracle
def judge(instance: Instance, options: SolverOptions = OPTIONS) -> Verdict:
    """Plan the instance with llmpq and hold the plan and its certificate to the optimum."""
    problem = instance.problem
    optimum = brute_force(problem, seed=instance.seed)
    opt = optimum.value if optimum is not None else None
    oracle_s = optimum.seconds if optimum is not None else 0.0
    base = {"seed": instance.seed, "optimum": opt, "oracle_s": oracle_s,
            "summary": instance.summary}  # fmt: skip
    empty = {"value": None, "excess_pct": None, "gap": None, "bound": None, "objective": None,
             "status": None}  # fmt: skip
    clock = time.perf_counter()
    plan, refused, crashed = None, None, None
    try:
        plan = make_plan(problem, "llmpq", options)
    except UserError as err:
        refused = str(err)
    except Exception as err:  # a crash is an outcome to count, not to hide
        crashed = repr(err)
    seconds = time.perf_counter() - clock
    # Free the solver's models here, not at a random later allocation: python-mip's
    # Model.__del__ calls into cffi, and deadlocks when the cyclic collector runs it while cffi
    # holds its type-parser lock (seen after a UserError whose traceback held the models).
    gc.collect()
    if refused is not None:
        if opt is None:
            return Verdict(outcome="no_plan_ok", planner_s=seconds, failures=(), **base, **empty)
        return Verdict(outcome="false_infeasible", planner_s=seconds, note=refused,
                       failures=(f"UserError although a plan of {opt:.6g} ms exists: {refused}",),
                       **base, **empty)  # fmt: skip
    if crashed is not None or plan is None:
        return Verdict(outcome="planner_error", planner_s=seconds, note=str(crashed),
                       failures=(f"make_plan crashed: {crashed}",), **base, **empty)  # fmt: skip
    s = plan.solver
    reported = {"gap": s.gap, "bound": s.bound, "objective": s.objective, "status": s.status}
    try:
        stages = [(problem.cluster.device(st.device), list(st.bits)) for st in plan.stages]
        ev = evaluate_stages(problem, stages, plan.micro_batch)
    except Exception as err:  # a plan that cannot be priced is an invalid plan
        return Verdict(outcome="planner_error", planner_s=seconds, note=repr(err),
                       failures=(f"the plan cannot be priced: {err!r}",),
                       **base, **empty)  # fmt: skip
    v = closed_form(problem, ev)
    failures: list[str] = []
    try:
        check_plan(plan, problem.cluster)
    except UserError as err:
        failures.append(f"check_plan: {err}")
    if not meets_budget(problem, ev.sum_omega):
        failures.append(f"Σω {ev.sum_omega} over the budget {problem.omega_budget}")
    if s.status != "OPTIMAL":
        failures.append(f"status {s.status}")
    if s.gap is None or s.gap > GAP_TARGET * (1 + REL_TOL):
        failures.append(f"gap {s.gap} above the target {GAP_TARGET}")
    if s.objective is None or not _close(s.objective, v, REL_TOL):
        failures.append(f"reported objective {s.objective} is not the plan's value {v}")
    excess = None if opt is None else 100 * (v / opt - 1)
    if failures and failures[0].startswith(("check_plan", "Σω")):
        outcome = "planner_error"
    elif opt is None or v < opt * (1 - PRICE_TOL):  # the sanity check: nothing beats the optimum
        outcome = "below_oracle"
        failures.append(f"the plan ({v} ms) beats the oracle's optimum ({opt})")
    else:
        gap = s.gap or 0.0
        bound_ok = s.bound is not None and s.bound <= opt * (1 + REL_TOL)
        value_ok = gap >= 1 or v <= opt / (1 - gap) * (1 + REL_TOL)
        if not bound_ok:
            failures.append(f"bound {s.bound} above the optimum {opt}")
        if not value_ok:
            failures.append(f"value {v} beyond the optimum {opt} / (1 − gap {gap})")
        if not (bound_ok and value_ok):
            outcome = "false_certificate"
        elif v <= opt * (1 + REL_TOL):
            outcome = "optimal"
        else:
            outcome = "within_gap"
    note = "" if optimum is None else f"oracle: {optimum.describe()}"
    return Verdict(outcome=outcome, value=v, excess_pct=excess, planner_s=seconds,
                   failures=tuple(failures), note=note, **base, **reported)  # fmt: skip


# ----------------------------------------------------------------------- random instances
def _omega(rng: np.random.Generator, layers: int) -> tuple[xr.DataArray, str]:
    if rng.random() < 0.6:
        om = np.tile([4.0, 1.0, 0.05, 0.0], (layers, 1)) * (0.5 + rng.random((layers, 1)))
        how = "scaled rows"
    else:  # any non-negative ω, non-increasing in bits; 16 bits sometimes not free
        om = -np.sort(-rng.random((layers, len(BITS))) * rng.choice([1.0, 5.0]), axis=1)
        om[:, -1] *= rng.random() < 0.5
        how = "random cells"
    coords = {"layer": range(layers), "bits": list(BITS)}
    da = xr.DataArray(om, dims=("layer", "bits"), coords=coords, attrs={"method": "test"})
    return da, how


def _cluster(types, memories_GiB, hosts, name: str = "oracle") -> Cluster:
    return Cluster.from_dict({"name": name, "devices": [
        {"name": f"d{i}", "type": t, "memory_GiB": float(m), "host": h}
        for i, (t, m, h) in enumerate(zip(types, memories_GiB, hosts, strict=True))
    ]})  # fmt: skip


def random_instance(seed: int, max_layers: int = 6, max_devices: int = 3) -> Instance:
    """A small seeded problem with binding memory and a quality target (module docstring).

    Memory: each device gets ``base + f · (full16 − base)`` bytes, where ``base`` is what a stage
    without layers needs there and ``full16`` the whole model at 16 bits, both at that memory
    (they grow with it through the allocator slack: solved as a linear equation): f in [1, 1.3]
    (10 %: it holds the model alone), [0.35, 0.95] (55 %: 16 bits do not fit on it alone),
    [0.08, 0.35] (35 %: low bits only), and on 8 % of instances every device in [0, 0.04] (often
    no plan at all). Quality: θ = 0, a small θ (the whole Σω range worth 2–20 % of a 16-bit
    makespan), a large θ (1–10 makespans), or a Σω budget (mostly below 4 bits everywhere)."""
    rng = np.random.default_rng(seed)
    model = str(rng.choice(MODELS))
    layers = int(rng.integers(4, max_layers + 1))
    spec = replace(model_spec(model), num_layers=layers, name=f"{model}-{layers}l")
    workload = Workload(int(rng.choice([4, 6, 8])), int(rng.choice([32, 64, 128])),
                        int(rng.choice([4, 8, 16])))  # fmt: skip
    n = int(rng.integers(2, max_devices + 1))
    types = [str(t) for t in rng.choice(DEVICE_TYPES, n)]
    if rng.random() < 0.15:
        types = [types[0]] * n  # identical devices: the order dedup matters
    hosts = ["h1"] * n if rng.random() < 0.5 else [str(h) for h in rng.choice(["h1", "h2"], n)]
    starved = rng.random() < 0.08
    fractions = []
    for _ in range(n):
        r = rng.random()
        lo, hi = ((0.0, 0.04) if starved else (1.0, 1.3) if r < 0.1 else (0.35, 0.95) if r < 0.65
                  else (0.08, 0.35))  # fmt: skip
        fractions.append(lo + (hi - lo) * rng.random())
    if not starved and len(set(types)) < n and rng.random() < 0.5:
        fractions = [fractions[0]] * n
    omega, omega_how = _omega(rng, layers)

    # memory: a stage's peak is affine in the device's memory M (allocator slack); at 1 and 2 GiB
    mb = micro_batches(workload, num_devices=n)[0]

    def peak(type_name: str, memory_GiB: float, bits: list[int]) -> int:
        device = _cluster([type_name], [memory_GiB], ["h1"]).devices[0]
        return stage_memory(spec, bits, workload, mb, is_first=True, is_last=True,
                            device_type=device.type).total_bytes  # fmt: skip

    GiB = 1024**3
    memories = []
    for t, f in zip(types, fractions, strict=True):
        want = [peak(t, m, []) + f * (peak(t, m, [16] * layers) - peak(t, m, [])) for m in (1, 2)]
        slope = (want[1] - want[0]) / GiB  # M = want(M), solved
        memories.append(round((want[0] - slope * GiB) / (1 - slope) / GiB, 4))
    cluster = _cluster(types, memories, hosts)

    problem = planning_problem(spec, cluster, workload, costs_dir=None, indicator=omega, theta=0.0)
    ref_ms = min(evaluate_stages(problem, [(d, [16] * layers)], mb).makespan_s * 1e3
                 for d in cluster.devices)  # fmt: skip
    om = problem.omega
    lo, hi = float(om[:, -1].sum()), float(om[:, 0].sum())
    span = max(hi - lo, 1e-9)
    r = rng.random()
    if r < 0.25:
        target, quality = "θ = 0", {"theta": 0.0}
    elif r < 0.5:
        theta = float(rng.uniform(0.02, 0.2) * ref_ms / span)
        target, quality = f"small θ = {theta:.4g}", {"theta": theta}
    elif r < 0.75:
        theta = float(rng.uniform(1.0, 10.0) * ref_ms / span)
        target, quality = f"large θ = {theta:.4g}", {"theta": theta}
    else:  # mostly binding: below the Σω of 4 bits everywhere (the usual θ = 0 choice)
        at4 = float(om[:, 1].sum())
        budget = (
            float(lo + rng.uniform(0.05, 1.0) * (at4 - lo))
            if rng.random() < 0.8
            else float(lo + rng.uniform(1.0, 1.6) * (at4 - lo))
        )
        target, quality = f"Σω ≤ {budget:.4g}", {"quality_budget": budget}
    problem = problem.with_quality(quality.get("theta"), quality.get("quality_budget"))
    devices = ", ".join(
        f"{t} {m:g} GiB @{h}" for t, m, h in zip(types, memories, hosts, strict=True)
    )
    summary = (f"{spec.name}; {devices}; batch {workload.batch_size}, prompt "
               f"{workload.prompt_len}, gen {workload.gen_len}; ω {omega_how}; {target}"
               f"{'; starved' if starved else ''}")  # fmt: skip
    return Instance(seed, problem, summary)
