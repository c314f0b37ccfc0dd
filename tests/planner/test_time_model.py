"""The closed-form time model against the event-driven simulator."""

from __future__ import annotations

import numpy as np
import pytest

from llmpq.plan import MicroBatch, Plan, Stage
from llmpq.planner.time_model import decode_pipeline_ms, prefill_pipeline_ms
from llmpq.simulator import simulate


def test_prefill_is_gpipe() -> None:
    t, c = np.array([2.0, 3.0, 1.0]), np.array([0.5, 0.5, 0.0])
    assert prefill_pipeline_ms(t, c, 4) == pytest.approx(7.0 + 3 * 3.0)


@pytest.mark.parametrize("m_d", [1, 2, 3, 4, 6])
def test_decode_on_equal_stages_matches_the_schedule(m_d) -> None:
    # N equal stages of t ms, no transfers, S steps: the last micro-batch starts
    # min(m_d, N) − 1 slots late; a step takes max(N, m_d) slots
    n, t, steps = 3, 2.0, 10
    expected = steps * max(n, m_d) * t + (min(m_d, n) - 1) * t
    assert decode_pipeline_ms(np.full((n, steps), t), np.zeros(n), m_d) == pytest.approx(expected)
    assert decode_pipeline_ms(np.zeros((n, 0)), np.zeros(n), m_d) == 0.0


def _plan(problem, stage_layers, bits, mb) -> Plan:
    devices = problem.cluster.devices
    stages, start = [], 0
    for device, size, b in zip(devices, stage_layers, bits, strict=True):
        stages.append(Stage(device.name, device.type.name, (start, start + size), (b,) * size))
        start += size
    return Plan(problem.model_id, problem.spec, problem.workload, "hand", tuple(stages), mb,
                problem.cluster.name)  # fmt: skip


@pytest.mark.parametrize(
    "mb",
    [MicroBatch(8, 8, 1), MicroBatch(4, 4, 2), MicroBatch(2, 2, 4), MicroBatch(1, 8, 1)],
    ids=str,
)
def test_simulator_agrees_with_the_closed_form_within_1_percent(small_problem, mb) -> None:
    from llmpq.planner.time_model import evaluate_stages

    problem = small_problem(6, memory_GiB=3.0)
    plan = _plan(problem, [3, 3], [16, 8], mb)
    closed = evaluate_stages(
        problem, [(problem.cluster.device(s.device), s.bits) for s in plan.stages], mb
    )
    sim = simulate(plan, problem)
    assert sim.makespan_s == pytest.approx(closed.makespan_s, rel=0.01)
    assert sim.prefill_s == pytest.approx(closed.prefill_s, rel=0.01)
    assert all(0 <= s.bubble_fraction < 1 for s in sim.stages)
    assert sim.tokens_per_s == pytest.approx(8 * 16 / sim.makespan_s)
    busy = sum(s.busy_s for s in sim.stages)
    assert busy < 2 * sim.makespan_s  # two stages cannot be busier than the makespan each
