"""The ILP finds the optimum of its own objective: checked against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from llmpq.plan import MicroBatch
from llmpq.planner.ilp import SolverOptions, build_model, instance_for, solve_instance
from llmpq.planner.problem import BITS
from llmpq.planner.search import linear_objective

MB = MicroBatch(4, 4, 2)


def brute_force(inst) -> float:
    """Every split of the layers over the two positions (ends used) × every bit per layer."""
    L, best = inst.num_layers, np.inf
    for split in range(1, L):
        for bits in itertools.product(BITS, repeat=L):
            counts = np.zeros((2, len(BITS)), dtype=int)
            for i, b in enumerate(bits):
                counts[0 if i < split else 1, BITS.index(b)] += 1
            best = min(best, linear_objective(inst, counts, bits))
    return best


@pytest.mark.parametrize("per_layer", [False, True], ids=["uniform-omega", "per-layer-omega"])
@pytest.mark.parametrize("memory_GiB", [0.8, 3.0], ids=["tight", "roomy"])
def test_the_ilp_optimum_is_the_brute_force_optimum(small_problem, per_layer, memory_GiB) -> None:
    problem = small_problem(4, per_layer=per_layer, memory_GiB=memory_GiB)
    inst = instance_for(problem, problem.cluster.devices, MB)
    assert inst.per_layer == per_layer
    sol = solve_instance(inst, SolverOptions(gap=0.0))
    expected = brute_force(inst)
    assert np.isfinite(expected)
    assert sol.status == "OPTIMAL"
    assert sol.objective == pytest.approx(expected, rel=1e-6)
    # the solution really is what its objective says
    assert linear_objective(inst, sol.counts, sol.bits_per_layer) == pytest.approx(
        expected, rel=1e-6
    )
    if memory_GiB < 1:  # the small device has room for one 3-bit layer only
        assert sol.counts[1].tolist() == [1, 0, 0, 0]


def test_a_budget_is_a_hard_limit(small_problem) -> None:
    problem = small_problem(4, quality_budget=2.0)
    inst = instance_for(problem, problem.cluster.devices, MB)
    sol = solve_instance(inst, SolverOptions(gap=0.0))
    assert problem.sum_omega(sol.bits_per_layer) <= 2.0 + 1e-9
    assert sol.objective == pytest.approx(brute_force(inst), rel=1e-6)


def test_the_model_is_built_apart_from_the_solve_with_named_families(small_problem) -> None:
    problem = small_problem(4, per_layer=True)
    model, v = build_model(instance_for(problem, problem.cluster.devices, MB))
    names = {c.name.rsplit("_", 1)[0] for c in model.constrs}
    assert {"cover", "memory_decode", "memory_prefill", "prefill_slot", "decode_slot", "decode_round", "assign",
            "in_order_0"} <= names | {c.name for c in model.constrs}  # fmt: skip
    assert model.num_solutions == 0  # not solved yet
    assert len(v.z) == 4 * 2 * 4  # layers × positions × bits


def test_a_time_limit_keeps_the_incumbent(small_problem) -> None:
    problem = small_problem(24, per_layer=True, memory_GiB=1.2)
    inst = instance_for(problem, problem.cluster.devices, MB)
    sol = solve_instance(inst, SolverOptions(time_limit_s=0.05, gap=0.0))
    if sol.status == "FEASIBLE":  # stopped early: the incumbent is kept with its bound
        assert sol.found and sol.bound <= sol.objective and sol.gap >= 0
    else:
        assert sol.status == "OPTIMAL" and sol.found
