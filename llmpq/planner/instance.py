"""The numbers of one ILP: a pipeline order of devices that are all used, and a micro-batch.

Usage::

    from llmpq.planner.instance import instance_for

    inst = instance_for(problem, order, micro_batch)    # costs at each position, per step
    inst.memory_fits(counts)        # the exact memory model's verdict on layer counts per (j, k)
    inst.regimes(counts)            # which decode term binds at each step

Positions ``j`` are the devices of ``order`` in pipeline order; every position holds at least
one layer (a device left out of a plan is left out of its order: the search enumerates device
subsets), so each position's outgoing link is the link to the next *used* device and the last
sends token ids back to the first. Per position and bitwidth ``k`` of ``BITS``: prefill and
decode milliseconds per layer (decode per step of the growing context), what a used stage pays
regardless, its transfers, and its exact memory at both phase peaks
(:class:`~llmpq.planner.time_model.PhaseCoefficients`). NaN marks a bitwidth the device cannot
run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.plan import MicroBatch
from llmpq.planner.problem import BITS, PlanningProblem
from llmpq.planner.time_model import stage_coefficients

PHASES = ("prefill", "decode")


@dataclass(frozen=True, eq=False)
class Instance:
    """Per position ``j`` and bitwidth ``k`` (NaN: not allowed), times in ms, memory in bytes."""

    devices: tuple[ClusterDevice, ...]
    micro_batch: MicroBatch
    num_layers: int
    lp: np.ndarray  # (N, K) one prefill micro-batch, per layer
    fp: np.ndarray  # (N,) fixed prefill ms of a stage
    cp: np.ndarray  # (N,) prefill transfer
    ld: np.ndarray  # (N, K, S) one decode micro-batch, per layer, per step
    fd: np.ndarray  # (N, S) fixed decode ms of a stage, per step
    cd: np.ndarray  # (N,) decode transfer (one micro-batch, one step)
    mem_layer: np.ndarray  # (2, N, K) bytes per layer, at the prefill and the decode peak
    mem_base: np.ndarray  # (2, N, K) the rest of a stage of ≥ 2 layers holding bits k
    mem_held: np.ndarray  # (2, N) what a one-layer stage does not hold
    cap: np.ndarray  # (N,) device memory
    m_p: int
    m_d: int
    omega: np.ndarray  # (L, K)
    theta: float
    budget: float | None

    @property
    def num_positions(self) -> int:
        return len(self.devices)

    @property
    def steps(self) -> int:
        return self.ld.shape[2]

    @property
    def per_layer(self) -> bool:
        return not np.allclose(self.omega, self.omega[:1], rtol=1e-12, atol=0.0)

    @property
    def max_layers(self) -> int:
        """The most layers one position can hold (every other position holds one)."""
        return self.num_layers - self.num_positions + 1

    def allowed(self, j: int, k: int) -> bool:
        return bool(np.isfinite(self.lp[j, k]))

    # ------------------------------------------------------------------ exact verdicts
    def memory_bytes(self, counts: np.ndarray) -> np.ndarray:
        """(2, N) each position's peak at each phase, from layer counts (N, K)."""
        counts = np.asarray(counts)
        held = counts > 0
        layers = counts.sum(axis=1)
        with np.errstate(invalid="ignore"):
            linear = np.nansum(self.mem_layer * counts, axis=2)
            base = np.where(held, self.mem_base, -np.inf).max(axis=2)
        return linear + base - self.mem_held * (layers == 1)

    def most_layers(self) -> np.ndarray:
        """(N, K) the most layers at ``BITS[k]`` that position ``j`` can hold (0: none, or not
        allowed), at most ``max_layers``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            room = self.cap[None, :, None] - self.mem_base + self.mem_held[:, :, None]
            most = np.floor(np.min(room / self.mem_layer, axis=0))
        most = np.where(np.isfinite(self.lp) & np.isfinite(most), most, 0)
        with np.errstate(invalid="ignore"):  # what fits_uniform(j, k, 1) says, for every cell
            one = self.mem_layer + self.mem_base - self.mem_held[:, :, None]
            one_fits = np.isfinite(self.lp) & np.all(one <= self.cap[None, :, None], axis=0)
        return np.clip(np.where(one_fits, np.maximum(most, 1), 0), 0, self.max_layers)

    def interchangeable(self) -> list[tuple[int, int]]:
        """Pairs (j, j') of positions, j < j' adjacent in their group, whose numbers are all
        equal: swapping their layers changes nothing in the counts formulation."""

        def key(j: int) -> bytes:
            parts = (
                self.lp[j],
                self.fp[j],
                self.cp[j],
                self.ld[j],
                self.fd[j],
                self.cd[j],
                self.mem_layer[:, j],
                self.mem_base[:, j],
                self.mem_held[:, j],
                self.cap[j],
            )
            return b"".join(np.ascontiguousarray(p, dtype=np.float64).tobytes() for p in parts)

        groups: dict[bytes, list[int]] = {}
        for j in range(self.num_positions):
            groups.setdefault(key(j), []).append(j)
        return [(g[i], g[i + 1]) for g in groups.values() for i in range(len(g) - 1)]

    def fits_uniform(self, j: int, k: int, layers: int) -> bool:
        """Whether ``layers`` layers at ``BITS[k]`` fit position ``j`` (0 layers always do)."""
        if layers == 0:
            return True
        if not self.allowed(j, k):
            return False
        need = layers * self.mem_layer[:, j, k] + self.mem_base[:, j, k]
        need = need - self.mem_held[:, j] * (layers == 1)
        return bool(np.all(need <= self.cap[j]))

    def memory_fits(self, counts: np.ndarray) -> bool:
        return bool(np.all(self.memory_bytes(counts) <= self.cap))

    def stage_ms(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(prefill (N,), decode (N, S)) compute of each position."""
        c = np.asarray(counts, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            t_p = np.nansum(self.lp * c, axis=1) + self.fp
            t_d = np.nansum(self.ld * c[:, :, None], axis=1) + self.fd
        return t_p, t_d

    def regimes(self, counts: np.ndarray) -> np.ndarray:
        """(S − 1,) which term binds each decode step before the last under ``counts``:
        0 the round trip, 1 + j stage j's slot, N + 1 the slowest link."""
        _, t_d = self.stage_ms(counts)
        t_d = t_d[:, :-1]
        terms = np.vstack([t_d.sum(axis=0) + self.cd.sum(), self.m_d * t_d,
                           np.full(t_d.shape[1], self.m_d * self.cd.max())])  # fmt: skip
        if self.m_d == 1:
            return np.zeros(t_d.shape[1], dtype=int)
        return np.argmax(terms, axis=0)


def instance_for(
    problem: PlanningProblem, order: Sequence[ClusterDevice], micro_batch: MicroBatch,
    coefficients=None,
) -> Instance:  # fmt: skip
    """Price every position of ``order``. ``coefficients(device, mb, is_first, is_last, next)``
    may be a cache of :func:`~llmpq.planner.time_model.stage_coefficients`."""
    get = coefficients or (
        lambda d, mb, first, last, nxt: stage_coefficients(
            problem, d, mb, is_first=first, is_last=last, next_device=nxt
        )
    )
    n = len(order)
    coefs = [get(order[j], micro_batch, j == 0, j == n - 1, order[(j + 1) % n]) for j in range(n)]
    phases = [[getattr(c, phase) for c in coefs] for phase in PHASES]
    w = problem.workload
    return Instance(
        devices=tuple(order),
        micro_batch=micro_batch,
        num_layers=problem.num_layers,
        lp=np.array([c.prefill.layer_ms for c in coefs]),
        fp=np.array([c.prefill.fixed_ms for c in coefs], dtype=np.float64),
        cp=np.array([c.prefill.send_ms for c in coefs]),
        ld=np.array([c.decode.layer_ms for c in coefs]).reshape(n, len(BITS), w.gen_len - 1),
        fd=np.array([c.decode.fixed_ms for c in coefs]).reshape(n, w.gen_len - 1),
        cd=np.array([c.decode.send_ms for c in coefs]),
        mem_layer=np.array([[p.layer_bytes for p in ps] for ps in phases]),
        mem_base=np.array([[p.base_bytes for p in ps] for ps in phases]),
        mem_held=np.array([[p.held_bytes for p in ps] for ps in phases], dtype=np.float64),
        cap=np.array([c.memory_bytes for c in coefs], dtype=np.float64),
        m_p=math.ceil(w.batch_size / micro_batch.prefill_size),
        m_d=micro_batch.decode_count,
        omega=problem.omega,
        theta=problem.theta,
        budget=problem.omega_budget,
    )
