"""The ILP is the closed form: exact memory rows, an exact objective with one segment per step,
and every relaxation a lower bound. Checked against brute force on small instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from llmpq.plan import MicroBatch
from llmpq.planner.bounds import PhaseBlock, phase_bounds
from llmpq.planner.formulation import decode_segments, formulate, split_segments
from llmpq.planner.ilp import SolverOptions, build_model, solve, solve_instance
from llmpq.planner.instance import instance_for
from llmpq.planner.problem import BITS
from llmpq.planner.search import CoefficientCache, closed_form_value
from llmpq.planner.time_model import peak_memory_bytes

EXACT = SolverOptions(gap=0.0)


def count_matrices(num_positions: int, layers: int, allowed: int = len(BITS)):
    """Every (positions × bits) count matrix with ≥ 1 layer per position, Σ = layers."""
    per_position = [
        c for total in range(1, layers - num_positions + 2)
        for c in itertools.product(range(total + 1), repeat=allowed) if sum(c) == total
    ]  # fmt: skip
    for rows in itertools.product(per_position, repeat=num_positions):
        if sum(map(sum, rows)) == layers:
            yield np.array(rows)


def stages_of(order, counts):
    """Stages (device, bits) of a count matrix: each position's bits in BITS order."""
    return [(d, [BITS[k] for k in range(len(BITS)) for _ in range(int(row[k]))])
            for d, row in zip(order, counts, strict=True)]  # fmt: skip


def fixed(inst, counts, segments=None):
    """The formulation with the counts fixed: its optimum is the ILP's value of them."""
    form = formulate(inst, segments)
    model, x = build_model(form, EXACT)
    for c, i in form.n.items():
        model += x[i] == int(counts[c])
    return solve(model, x, form, EXACT)


@pytest.mark.parametrize("memory_GiB", [0.6, 1.0, 2.0], ids=["tight", "binding", "roomy"])
@pytest.mark.parametrize("mb", [MicroBatch(8, 8, 1), MicroBatch(2, 4, 2), MicroBatch(1, 2, 4)])
def test_the_memory_rows_are_the_exact_memory_model_on_every_plan(small_problem, memory_GiB, mb):
    problem = small_problem(4, memory_GiB=memory_GiB)
    verdicts = set()
    for order in (problem.cluster.devices, problem.cluster.devices[::-1],
                  problem.cluster.devices[:1]):  # fmt: skip
        inst = instance_for(problem, order, mb)
        for counts in count_matrices(len(order), 4):
            stages = stages_of(order, counts)
            peak = peak_memory_bytes(problem, stages, mb)
            exact = all(peak[d.name] <= d.memory_bytes for d, _ in stages)
            assert inst.memory_fits(counts) == exact, (counts.tolist(), peak)
            verdicts.add(exact)
    if memory_GiB == 1.0:
        assert verdicts == {True, False}  # memory binds: both verdicts occur


def test_the_solver_model_accepts_exactly_the_plans_that_fit(small_problem) -> None:
    problem = small_problem(4, memory_GiB=1.0)
    order, mb = problem.cluster.devices, MicroBatch(2, 4, 2)
    inst = instance_for(problem, order, mb)
    plans = list(count_matrices(2, 4))
    rng = np.random.default_rng(0)
    for i in rng.choice(len(plans), 24, replace=False):
        counts = plans[i]
        sol = fixed(inst, counts)
        assert sol.found == inst.memory_fits(counts), counts.tolist()


@pytest.mark.parametrize("mb", [MicroBatch(8, 8, 1), MicroBatch(2, 4, 2), MicroBatch(1, 2, 4),
                                MicroBatch(4, 1, 8)], ids=str)  # fmt: skip
def test_with_one_segment_per_step_the_objective_is_the_closed_form(small_problem, mb) -> None:
    problem = small_problem(4, memory_GiB=2.0, theta=30.0)
    order = problem.cluster.devices
    inst = instance_for(problem, order, mb)
    fits = [c for c in count_matrices(2, 4) if inst.memory_fits(c)]
    rng = np.random.default_rng(1)
    for i in rng.choice(len(fits), 6, replace=False):
        counts = fits[i]
        value = closed_form_value(problem, stages_of(order, counts), mb)
        assert fixed(inst, counts).objective == pytest.approx(value, rel=1e-9)
        assert fixed(inst, counts, segments=3).objective <= value * (1 + 1e-9)  # a bound


@pytest.mark.parametrize("per_layer", [False, True], ids=["uniform-omega", "per-layer-omega"])
@pytest.mark.parametrize("memory_GiB", [0.8, 3.0], ids=["tight", "roomy"])
def test_the_ilp_optimum_is_the_brute_force_optimum(small_problem, per_layer, memory_GiB) -> None:
    problem = small_problem(4, per_layer=per_layer, memory_GiB=memory_GiB)
    order, mb = problem.cluster.devices, MicroBatch(4, 4, 2)
    inst = instance_for(problem, order, mb)
    best = np.inf
    for split in range(1, 4):
        for bits in itertools.product(BITS, repeat=4):
            stages = [(order[0], bits[:split]), (order[1], bits[split:])]
            best = min(best, closed_form_value(problem, stages, mb))
    assert np.isfinite(best)
    sol = solve_instance(inst, EXACT)
    assert sol.status == "OPTIMAL" and sol.objective == pytest.approx(best, rel=1e-9)
    stages = [(d, b) for d, b in zip(order, sol.stage_bits(), strict=True)]
    assert closed_form_value(problem, stages, mb) == pytest.approx(best, rel=1e-9)
    if memory_GiB < 1:  # the small device has room for one layer only
        assert sol.counts[1].sum() == 1


def test_a_budget_is_a_hard_limit(small_problem) -> None:
    problem = small_problem(4, quality_budget=2.0)
    inst = instance_for(problem, problem.cluster.devices, MicroBatch(4, 4, 2))
    sol = solve_instance(inst, EXACT)
    assert problem.sum_omega(sol.bits_per_layer) <= 2.0 + 1e-9


def test_the_model_is_built_apart_from_the_solve_with_named_families(small_problem) -> None:
    problem = small_problem(4, per_layer=True)
    inst = instance_for(problem, problem.cluster.devices, MicroBatch(4, 4, 2))
    form = formulate(inst)
    model, _ = build_model(form)
    names = {c.name.rstrip("_0123456789") for c in model.constrs}
    assert {"cover", "use", "hold", "one", "memory_decode", "memory_prefill", "prefill_slot",
            "decode_round", "decode_slot", "decode_last", "bottleneck_last", "assign", "count",
            "in_order"} <= names  # fmt: skip
    assert model.num_solutions == 0  # not solved yet
    assert len(form.z) == 4 * 2 * 4  # layers × positions × bits


def test_a_time_limit_keeps_the_incumbent(small_problem) -> None:
    problem = small_problem(24, per_layer=True, memory_GiB=1.2)
    inst = instance_for(problem, problem.cluster.devices, MicroBatch(4, 4, 2))
    sol = solve_instance(inst, SolverOptions(time_limit_s=0.05, gap=0.0))
    if sol.status == "FEASIBLE":  # stopped early: the incumbent is kept with its bound
        assert sol.found and sol.bound <= sol.objective and sol.gap >= 0
    else:
        assert sol.status in ("OPTIMAL", "NO_SOLUTION_FOUND")


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("quality", [{}, {"quality_budget": 3.0}])
def test_every_relaxation_is_below_the_ilp_and_the_batched_bounds_below_the_lp(
    small_problem, per_layer, quality
) -> None:
    problem = small_problem(6, per_layer=per_layer, memory_GiB=1.0, theta=20.0, **quality)
    coef = CoefficientCache(problem)
    for order in (problem.cluster.devices, problem.cluster.devices[::-1]):
        for mb in (MicroBatch(8, 8, 1), MicroBatch(2, 4, 2), MicroBatch(1, 2, 4)):
            inst = instance_for(problem, order, mb, coef)
            form = formulate(inst, 4, "relaxed")
            lp = form.lp_bound()
            split = form.lp_bound("prefill") + form.lp_bound("decode")
            pre = PhaseBlock.prefill(problem, coef, order, mb.prefill_size)
            dec = PhaseBlock.decode(problem, coef, order, mb.decode_size, mb.decode_count)
            slim_pre, slim_dec, slim = phase_bounds([pre, dec, PhaseBlock.joint(pre, dec)])
            ilp = solve_instance(inst, EXACT).objective
            assert slim_pre + slim_dec <= slim * (1 + 1e-9)
            assert slim <= lp * (1 + 1e-9) and split <= lp * (1 + 1e-9)
            assert lp <= ilp * (1 + 1e-9)


def test_batched_bounds_are_the_bounds_one_by_one(small_problem) -> None:
    problem = small_problem(6, memory_GiB=0.8)  # the small device alone cannot hold the model
    coef = CoefficientCache(problem)
    devices = problem.cluster.devices
    blocks = [PhaseBlock.prefill(problem, coef, order, p)
              for order in (devices, devices[:1], devices[1:]) for p in (1, 2, 4, 8)]  # fmt: skip
    together = phase_bounds(blocks)
    alone = [phase_bounds([b])[0] for b in blocks]
    assert together == pytest.approx(alone, rel=1e-9)
    assert any(np.isinf(together)) and any(np.isfinite(together))


def test_segments_split_where_the_binding_term_changes() -> None:
    assert decode_segments(10, 3) == ((0, 3), (3, 6), (6, 9))  # the last step stands apart
    assert decode_segments(1, 8) == ()
    regimes = np.array([0, 0, 0, 2, 2, 2, 2, 1, 1])
    assert split_segments(((0, 3), (3, 6), (6, 9)), regimes) == (
        (0, 3), (3, 6), (6, 7), (7, 9))  # fmt: skip


@pytest.mark.parametrize("model", ["opt-1.3b", "bloom-560m", "llama-2-7b", "mistral-7b"])
@pytest.mark.parametrize("device", ["T4", "cpu"])
def test_the_memory_rows_reproduce_the_memory_model_for_any_mix_of_bits(model, device) -> None:
    """What the rows assume of costmodel.memory: a phase peak is Σ per-layer bytes + the largest
    workspace of the bitwidths held − the held input of a one-layer stage."""
    from dataclasses import replace

    from llmpq.cluster import Cluster
    from llmpq.costmodel.memory import stage_memory
    from llmpq.models.spec import model_spec
    from llmpq.planner import planning_problem
    from llmpq.planner.time_model import memory_coefficients
    from llmpq.workload import Workload

    from .conftest import omega_array

    spec = replace(model_spec(model), num_layers=6)
    cluster = Cluster.from_dict({"name": "x", "devices": [{"type": device, "memory_GiB": 64}]})
    problem = planning_problem(spec, cluster, Workload(4, 64, 8), costs_dir=None,
                               indicator=omega_array(6), theta=0.0)  # fmt: skip
    d = cluster.devices[0]
    allowed = problem.allowed_bits(d)
    for first, last in itertools.product([True, False], repeat=2):
        for phase, size in (("prefill", 2), ("decode", 4)):
            layer, base, held = memory_coefficients(problem, d, phase, size, is_first=first,
                                                    is_last=last)  # fmt: skip
            mb = MicroBatch(2, 4, 1) if phase == "prefill" else MicroBatch(1, 4, 1)
            for bits in itertools.chain.from_iterable(
                itertools.combinations_with_replacement(allowed, c) for c in (1, 2, 3, 5)
            ):
                m = stage_memory(spec, list(bits), problem.workload, mb, is_first=first,
                                 is_last=last, device_type=d.type)  # fmt: skip
                peak = m.prefill_peak_bytes if phase == "prefill" else m.decode_peak_bytes
                cols = [BITS.index(b) for b in bits]
                model_bytes = (sum(layer[k] for k in cols) + max(base[k] for k in cols)
                               - held * (len(bits) == 1))  # fmt: skip
                assert model_bytes == m.static_bytes + m.reserve_bytes + peak, (bits, phase)


@pytest.mark.parametrize("memory_GiB", [0.5, 0.7, 0.8, 1.0, 2.0])
def test_the_closed_form_feasibility_of_a_block_is_the_lps(small_problem, memory_GiB) -> None:
    from llmpq.planner.bounds import _solve

    problem = small_problem(6, memory_GiB=memory_GiB)
    coef = CoefficientCache(problem)
    devices = problem.cluster.devices
    blocks = [
        PhaseBlock.prefill(problem, coef, order, p)
        for order in (devices, devices[::-1], devices[:1], devices[1:])
        for p in (1, 8)
    ]
    blocks += [PhaseBlock.decode(problem, coef, order, 2, 4)
               for order in (devices, devices[:1], devices[1:])]  # fmt: skip
    blocks = [b for b in blocks if b.can_cover()]
    if blocks:
        missed = _solve(blocks, slack=True)
        assert [b.feasible() for b in blocks] == [bool(m <= 1e-7) for m in missed]
