"""The time model: what a pipeline of stages costs for the whole batch (docs/design.md).

Usage::

    from llmpq.planner.time_model import stage_coefficients, evaluate_stages

    coef = stage_coefficients(problem, device, micro_batch, is_first=True, is_last=False,
                              next_device=other)
    coef.prefill.layer_ms[k]         # one layer at BITS[k], one prefill micro-batch
    ev = evaluate_stages(problem, [(device, [4, 4, 8]), (other, [16, 16, 3])], micro_batch)
    ev.makespan_s, ev.tokens_per_s, ev.peak_memory_bytes

With per-stage compute ``t_j`` and outgoing transfer ``c_j`` (the last stage sends the sampled
token ids back to the first: the ring), ``m_p`` prefill and ``m_d`` decode micro-batches:

* prefill: ``Σ_j (t_j + c_j) + (m_p − 1) · max_j max(t_j, c_j)`` (GPipe);
* decode, step ``s`` of ``gen_len − 1`` (context ``prompt_len + s``):
  ``max(R_s, m_d · T_s)`` with the round trip ``R_s = Σ_j (t_j(s) + c_j)`` and the bottleneck
  ``T_s = max_j max(t_j(s), c_j)``; plus the fill ``min((m_d − 1) · T, R − T)`` at the last step:
  when the round trip binds, the last micro-batch starts ``m_d − 1`` slots after the first;
  when a stage binds, the last item still crosses the other stages after it.
* makespan = prefill + decode (decoding starts when every prompt is prefilled — the runtime's
  schedule); tokens/s = batch · gen_len / makespan (generated tokens only, the paper's metric).

Every prefill micro-batch is priced at ``prefill_size`` and every decode micro-batch at
``decode_size`` (the last may be smaller: an upper bound). :mod:`llmpq.simulator` plays the
same schedule event by event, with the real micro-batch sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmpq.cluster import ClusterDevice
from llmpq.costmodel.comm import link_transfer_ms
from llmpq.costmodel.memory import IDS_BYTES, stage_memory
from llmpq.plan import MicroBatch
from llmpq.planner.problem import BITS, PlanningProblem


@dataclass(frozen=True, eq=False)
class PhaseCoefficients:
    """One phase's costs of one device at one pipeline position, for a micro-batch of one size:
    time per layer at each of ``BITS`` (NaN where the device cannot run that bitwidth) plus what
    a used stage pays regardless, the outgoing transfer, and the phase's exact memory peak as

        peak(stage) = Σ_layers layer_bytes[k] + max_{k held} base_bytes[k] − held_bytes·[1 layer]

    (every byte the stage holds at that phase's peak: weights, embeddings/head, reserve, KV,
    workspace; see :func:`memory_coefficients`)."""

    layer_ms: np.ndarray  # (K,) prefill; (K, steps) decode: one micro-batch, per step
    fixed_ms: float | np.ndarray  # stage overhead + embeddings (first) + head (last)
    send_ms: float  # outgoing transfer of one micro-batch
    layer_bytes: np.ndarray | None  # (K,) one more layer at BITS[k]: weights + its KV
    base_bytes: np.ndarray | None  # (K,) the rest of a stage of ≥ 2 layers holding BITS[k]
    held_bytes: int | None  # what a one-layer stage does not hold (its input is the layer's)

    def most_layers(self, memory_bytes: int) -> np.ndarray:
        """(K,) the most layers at ``BITS[k]`` alone that fit ``memory_bytes`` at this phase's
        peak (the held input counted as for one layer: an upper bound); NaN where not allowed."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.floor((memory_bytes - self.base_bytes + self.held_bytes) / self.layer_bytes)


@dataclass(frozen=True, eq=False)
class StageCoefficients:
    """Both phases of one device at one pipeline position, and the device's memory."""

    prefill: PhaseCoefficients
    decode: PhaseCoefficients
    memory_bytes: int  # the device's budget


def decode_contexts(problem: PlanningProblem) -> np.ndarray:
    """Cached tokens at each decode step: prompt_len, prompt_len + 1, … (gen_len − 1 steps)."""
    w = problem.workload
    return w.prompt_len + np.arange(w.gen_len - 1, dtype=np.float64)


def send_bytes(problem: PlanningProblem, batch: int, tokens: int, is_last: bool) -> int:
    """Hidden states to the next stage, or sampled token ids back to the first (the ring)."""
    if is_last:
        return batch * IDS_BYTES
    return batch * tokens * problem.spec.hidden_bytes_per_token()


def memory_coefficients(
    problem: PlanningProblem, device: ClusterDevice, phase: str, size: int, *,
    is_first: bool, is_last: bool,
) -> tuple[np.ndarray, np.ndarray, int]:  # fmt: skip
    """``(layer_bytes, base_bytes, held_bytes)`` of :class:`PhaseCoefficients`, read off the
    exact memory model (:func:`~llmpq.costmodel.memory.stage_memory`) itself: a stage's peak at
    one phase is linear in its layer count from two layers on, its workspace depends only on
    which bitwidths it holds (the largest single-bitwidth workspace: a test checks this on every
    family), and a one-layer stage does not hold its input apart from the layer's (the ids on
    the first stage it does). So ``c`` layers at one bitwidth cost ``base + c · layer``, and one
    layer ``base + layer − held``."""
    allowed = problem.allowed_bits(device)
    K = len(BITS)
    w = problem.memory_shape
    micro_batch = (MicroBatch(size, w.batch_size, 1) if phase == "prefill"
                   else MicroBatch(1, size, -(-w.batch_size // size)))  # fmt: skip
    layer, base = np.full(K, np.nan), np.full(K, np.nan)
    held = []

    def peak(bits: list[int]) -> int:
        m = stage_memory(problem.spec, bits, w, micro_batch, is_first=is_first,
                         is_last=is_last, device_type=device.type)  # fmt: skip
        return (
            m.static_bytes
            + m.reserve_bytes
            + (m.prefill_peak_bytes if phase == "prefill" else m.decode_peak_bytes)
        )

    for k, b in enumerate(BITS):
        if b not in allowed:
            continue
        one, two, three = (peak([b] * c) for c in (1, 2, 3))
        layer[k] = three - two
        base[k] = two - 2 * layer[k]
        held.append(base[k] + layer[k] - one)
    if held and max(held) - min(held) > 0:
        raise AssertionError(f"held input differs across bits on {device.name}: {held}")
    return layer, base, int(held[0]) if held else 0


def phase_coefficients(
    problem: PlanningProblem, device: ClusterDevice, phase: str, size: int, *,
    is_first: bool, is_last: bool, next_device: ClusterDevice,
    memory: tuple[np.ndarray, np.ndarray, int] | bool = True,
) -> PhaseCoefficients:  # fmt: skip
    """Costs of one ``phase`` micro-batch of ``size`` sequences at this pipeline position;
    ``memory``: :func:`memory_coefficients` of it if already known, True to compute them,
    False to leave them out (None fields: pricing times only)."""
    cm = problem.cost(device)
    w = problem.workload
    allowed = problem.allowed_bits(device)
    if phase == "prefill":
        seq, tokens = w.prompt_len, w.prompt_len
        layer = np.array([cm.prefill_layer_ms(b, size, seq) if b in allowed else np.nan
                          for b in BITS])  # fmt: skip
    else:
        seq, tokens = decode_contexts(problem), 1
        layer = np.stack(
            [np.broadcast_to(cm.decode_layer_ms(b, size, seq), seq.shape) if b in allowed
             else np.full(seq.shape, np.nan) for b in BITS]  # fmt: skip
        ) if seq.size else np.zeros((len(BITS), 0))  # fmt: skip
    fixed = np.broadcast_to(cm.stage_overhead_ms(phase, size, seq), np.shape(seq)) * 1.0
    if is_first:
        fixed = fixed + cm.embed_ms(phase, size, seq)
    if is_last:
        fixed = fixed + cm.head_ms(phase, size, seq)
    send = link_transfer_ms(
        problem.cluster, device, next_device, send_bytes(problem, size, tokens, is_last),
        problem.comm,
    )  # fmt: skip
    if memory is True:
        memory = memory_coefficients(problem, device, phase, size, is_first=is_first,
                                     is_last=is_last)  # fmt: skip
    elif memory is False:
        memory = (None, None, None)
    fixed_ms = float(fixed) if phase == "prefill" else np.asarray(fixed, dtype=np.float64)
    return PhaseCoefficients(layer, fixed_ms, float(send), *memory)


def stage_coefficients(
    problem: PlanningProblem,
    device: ClusterDevice,
    micro_batch: MicroBatch,
    *,
    is_first: bool,
    is_last: bool,
    next_device: ClusterDevice,
    memory: bool = True,
) -> StageCoefficients:
    """Both phases' coefficients (``memory=False``: times only, for pricing a given plan)."""
    where = {"is_first": is_first, "is_last": is_last, "next_device": next_device,
             "memory": memory}  # fmt: skip
    return StageCoefficients(
        phase_coefficients(problem, device, "prefill", micro_batch.prefill_size, **where),
        phase_coefficients(problem, device, "decode", micro_batch.decode_size, **where),
        device.memory_bytes,
    )


# ---------------------------------------------------------------------- the pipeline formulas
def prefill_pipeline_ms(t: np.ndarray, c: np.ndarray, m_p: int) -> float:
    """GPipe: one micro-batch through every stage, then ``m_p − 1`` bottleneck slots."""
    return float(np.sum(t + c) + (m_p - 1) * np.max(np.maximum(t, c)))


def decode_pipeline_ms(t: np.ndarray, c: np.ndarray, m_d: int) -> float:
    """``t``: (stages, steps) compute of one decode micro-batch; ``c``: (stages,) transfers."""
    if t.shape[1] == 0:
        return 0.0
    round_trip = t.sum(axis=0) + c.sum()
    bottleneck = np.maximum(t, c[:, None]).max(axis=0)
    steady = np.maximum(round_trip, m_d * bottleneck).sum()
    fill = min((m_d - 1) * bottleneck[-1], round_trip[-1] - bottleneck[-1])
    return float(steady + fill)


@dataclass(frozen=True)
class Evaluation:
    """The time model's verdict on explicit stages (seconds, bytes)."""

    prefill_s: float
    decode_s: float
    makespan_s: float
    tokens_per_s: float
    peak_memory_bytes: dict[str, int]
    over_budget: dict[str, int]  # device -> bytes over its memory (empty: fits)
    sum_omega: float

    @property
    def fits(self) -> bool:
        return not self.over_budget


def peak_memory_bytes(
    problem: PlanningProblem,
    stages: Sequence[tuple[ClusterDevice, Sequence[int]]],
    micro_batch: MicroBatch,
) -> dict[str, int]:
    """Each stage's memory under the exact memory model, by device name."""
    n = len(stages)
    return {
        device.name: int(stage_memory(
            problem.spec, list(bits), problem.memory_shape, micro_batch, is_first=j == 0,
            is_last=j == n - 1, device_type=device.type,
        ).total_bytes)
        for j, (device, bits) in enumerate(stages)
    }  # fmt: skip


def evaluate_stages(
    problem: PlanningProblem,
    stages: Sequence[tuple[ClusterDevice, Sequence[int]]],
    micro_batch: MicroBatch,
) -> Evaluation:
    """Price stages given as (device, bits of each of its layers), in pipeline order."""
    n = len(stages)
    t_p, c_p, c_d, t_d = [], [], [], []
    for j, (device, bits) in enumerate(stages):
        coef = stage_coefficients(
            problem, device, micro_batch, is_first=j == 0, is_last=j == n - 1,
            next_device=stages[(j + 1) % n][0], memory=False,
        )  # fmt: skip
        cols = [BITS.index(b) for b in bits]
        t_p.append(coef.prefill.fixed_ms + sum(coef.prefill.layer_ms[k] for k in cols))
        t_d.append(coef.decode.fixed_ms + sum((coef.decode.layer_ms[k] for k in cols), 0.0))
        c_p.append(coef.prefill.send_ms)
        c_d.append(coef.decode.send_ms)
    peak = peak_memory_bytes(problem, stages, micro_batch)
    over = {d.name: peak[d.name] - d.memory_bytes for d, _ in stages
            if peak[d.name] > d.memory_bytes}  # fmt: skip
    w = problem.workload
    m_p = math.ceil(w.batch_size / micro_batch.prefill_size)
    prefill_ms = prefill_pipeline_ms(np.array(t_p), np.array(c_p), m_p)
    decode_ms = decode_pipeline_ms(np.array(t_d), np.array(c_d), micro_batch.decode_count)
    makespan_s = (prefill_ms + decode_ms) / 1e3
    all_bits = [b for _, bits in stages for b in bits]
    return Evaluation(
        prefill_ms / 1e3, decode_ms / 1e3, makespan_s,
        w.batch_size * w.gen_len / makespan_s if makespan_s > 0 else float("inf"),
        peak, over, problem.sum_omega(all_bits),
    )  # fmt: skip


def dataset_makespan_s(
    problem: PlanningProblem,
    stages: Sequence[tuple[ClusterDevice, Sequence[int]]],
    micro_batch: MicroBatch,
    prompt_lens: Sequence[int],
    max_new_tokens: Sequence[int],
) -> float:
    """The closed form of the dataset schedule: the requests' generated tokens at the rate of
    one batch of ``problem.workload`` (the dataset's mean lengths at the plan's concurrency),
    i.e. ``Σ limits / (B · gen_len) × makespan(B, prompt_len, gen_len)``. Exact for requests
    of equal lengths in whole batches with one decode micro-batch (the dataset schedule is then
    the fixed one, batch after batch); otherwise the steady state, without the draining tail
    (:func:`llmpq.simulator.simulate_dataset` plays both)."""
    w = problem.workload
    per_batch = evaluate_stages(problem, stages, micro_batch).makespan_s
    return float(np.sum(max_new_tokens)) / (w.batch_size * w.gen_len) * per_batch
