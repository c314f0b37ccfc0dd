"""Baselines: PipeEdge's DP is the min-max optimum; Uniform splits evenly; AdaBits is max quality."""

from __future__ import annotations

import itertools

import numpy as np

from llmpq.planner import make_plan
from llmpq.planner.baselines import _minmax_partition, adabits, original_micro_batch, pipeedge
from llmpq.planner.instance import instance_for
from llmpq.planner.reference import solve_reference


def test_pipeedge_dp_is_the_min_max_optimum(small_problem) -> None:
    problem = small_problem(7, memory_GiB=3.0)
    inst = instance_for(problem, problem.cluster.devices, original_micro_batch(problem))
    k = 3  # 16-bit
    per_layer, fixed = inst.ld[:, k].mean(axis=1), inst.fd.mean(axis=1)
    sizes = _minmax_partition(inst, k, per_layer, fixed)

    def worst(split):
        return max(max(per_layer[j] * n + fixed[j], inst.cd[j]) for j, n in enumerate(split))

    best = min(worst((a, 7 - a)) for a in range(1, 7))
    assert sum(sizes) == 7 and worst(sizes) == best


def test_uniform_is_even_and_uniform(small_problem) -> None:
    plan = make_plan(small_problem(7, memory_GiB=3.0), "uniform")
    assert [s.layers[1] - s.layers[0] for s in plan.stages] == [4, 3]
    assert len(set(plan.bits_per_layer())) == 1


def test_adabits_has_the_least_omega_that_fits(small_problem) -> None:
    problem = small_problem(4, per_layer=True, memory_GiB=1.0)
    found = adabits(problem)
    inst = instance_for(problem, problem.cluster.devices, original_micro_batch(problem))
    best = np.inf
    for split in range(1, 4):  # brute force: least Σω over fitting assignments
        for bits in itertools.product([3, 4, 8, 16], repeat=4):
            counts = np.zeros((2, 4), dtype=int)
            for i, b in enumerate(bits):
                counts[0 if i < split else 1, [3, 4, 8, 16].index(b)] += 1
            if inst.memory_fits(counts):  # the exact memory model
                best = min(best, problem.sum_omega(bits))
    assert problem.sum_omega(found.bits_per_layer) == np.float64(best) or abs(
        problem.sum_omega(found.bits_per_layer) - best) < 1e-9  # fmt: skip
    assert pipeedge(problem).value >= 0


def test_the_reference_formulation_solves_and_is_priced_on_our_scale(small_problem) -> None:
    problem = small_problem(4, memory_GiB=1.0)
    plan = make_plan(problem, "llmpq")
    order = [problem.cluster.device(s.device) for s in plan.stages]
    ref = solve_reference(problem, order, plan.micro_batch)
    assert ref.solution.status == "OPTIMAL" and ref.found is not None
    n = len(order)
    assert ref.num_binaries == 4 * n * 4 + 4 * n + 4 * 4
    # llmpq optimises the corrected objective: the reference's plan is no better on it
    assert ref.found.value >= plan.solver.objective * (1 - 1e-6)
