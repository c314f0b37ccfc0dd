"""llmpq's planner against a brute-force oracle on small random problems (issue 20).

    pytest tests/planner/test_oracle.py -m "not slow"     # ~24 instances, under a minute
    pytest tests/planner/test_oracle.py                   # and the larger sweep (up to 8 layers)

Each instance (:func:`.oracle.random_instance`, seeded: a failure names its seed) is solved
exactly by enumeration (:func:`.oracle.brute_force`) and then by ``make_plan``; the plan must fit,
meet the target, and carry a true certificate: status OPTIMAL, gap ≤ 1 %, the bound at most the
optimum, the plan within the gap of the optimum, and the reported objective equal to the plan's
closed-form value. The oracle itself is checked against a naive enumeration of every bit vector.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from llmpq.cluster import Cluster
from llmpq.models.spec import model_spec
from llmpq.planner import evaluate_stages, planning_problem
from llmpq.planner.candidates import micro_batches
from llmpq.workload import Workload

from .oracle import (
    BITS,
    BUDGET_TOL,
    OPTIONS,
    brute_force,
    judge,
    pipeline_orders,
    random_instance,
)

FAST_SEEDS = (*range(22), 59, 65)  # 59 and 65: no plan exists
SLOW_SEEDS = tuple(range(1000, 1030))  # up to 8 layers; 1005, 1008, 1025: no plan


@pytest.mark.parametrize("seed", FAST_SEEDS)
def test_llmpq_meets_the_oracle(seed: int) -> None:
    verdict = judge(random_instance(seed), OPTIONS)
    assert verdict.ok, verdict.explain()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_llmpq_meets_the_oracle_on_larger_instances(seed: int) -> None:
    verdict = judge(random_instance(seed, max_layers=8), OPTIONS)
    assert verdict.ok, verdict.explain()


# ------------------------------------------------------------------------- the oracle itself
NAIVE_MEMORY_GiB = {3: (1.4, 1.0), 4: (1.7, 1.3)}  # layers -> (T4, V100): memory binds


def _naive_problem(layers: int, **quality):
    """2 devices on 2 hosts, 3 or 4 LLaMA layers, per-layer random ω, memory that binds (about
    half of the plans do not fit, 16 bits everywhere among them)."""
    t4, v100 = NAIVE_MEMORY_GiB[layers]
    spec = replace(model_spec("llama-2-7b"), num_layers=layers, name=f"llama-2-7b-{layers}l")
    om = -np.sort(-np.random.default_rng(3).random((layers, len(BITS))), axis=1)
    om[:, -1] = 0.0
    omega = xr.DataArray(om, dims=("layer", "bits"),
                         coords={"layer": range(layers), "bits": list(BITS)},
                         attrs={"method": "test"})  # fmt: skip
    cluster = Cluster.from_dict({"name": "naive", "devices": [
        {"name": "t4", "type": "T4", "memory_GiB": t4, "host": "h1"},
        {"name": "v100", "type": "V100-16G", "memory_GiB": v100, "host": "h2"},
    ]})  # fmt: skip
    return planning_problem(spec, cluster, Workload(2, 32, 4), costs_dir=None, indicator=omega,
                            **quality)  # fmt: skip


def _naive_points(problem):
    """(makespan_ms, Σω, fits) of every plan: every ordered subset of the devices, every split,
    every bit vector, every micro-batch — a plain evaluate_stages call each."""
    L, devices = problem.num_layers, problem.cluster.devices
    points = []
    for mb in micro_batches(problem.workload, num_devices=len(devices)):
        for k in range(1, len(devices) + 1):
            for order in itertools.permutations(devices, k):
                for cuts in itertools.combinations(range(1, L), k - 1):
                    bounds = (0, *cuts, L)
                    choices = [problem.allowed_bits(order[j]) for j in range(k)
                               for _ in range(bounds[j], bounds[j + 1])]  # fmt: skip
                    for bits in itertools.product(*choices):
                        stages = [(order[j], list(bits[bounds[j] : bounds[j + 1]]))
                                  for j in range(k)]  # fmt: skip
                        ev = evaluate_stages(problem, stages, mb)
                        points.append((ev.makespan_s * 1e3, ev.sum_omega, ev.fits))
    return points


def _oracle_equals_naive(layers: int) -> None:
    base = _naive_problem(layers, theta=0.0)
    points = _naive_points(base)
    fitting = [(ms, om) for ms, om, fits in points if fits]
    assert 0 < len(fitting) < len(points)  # memory binds, and some plan fits
    least, spread = min(om for _, om in fitting), np.ptp([om for _, om in fitting])
    ms_ref = min(ms for ms, _ in fitting)
    targets = [{"theta": 0.0}, {"theta": 0.1 * ms_ref / spread}, {"theta": 5 * ms_ref / spread},
               {"quality_budget": least + 0.3 * spread}, {"quality_budget": 0.0}]  # fmt: skip
    for quality in targets:
        problem = _naive_problem(layers, **quality)
        budget, theta = problem.omega_budget, problem.theta
        values = [ms + theta * om for ms, om in fitting
                  if budget is None or om <= budget * (1 + BUDGET_TOL)]  # fmt: skip
        best = brute_force(problem, check_samples=0)
        if quality == {"quality_budget": 0.0}:
            assert not values  # 16 bits everywhere does not fit: no plan
        if not values:
            assert best is None, quality
            continue
        assert best is not None, quality
        assert best.value == pytest.approx(min(values), rel=1e-9), quality


def test_oracle_equals_a_naive_enumeration() -> None:
    """3 layers: every bit vector of every order, split and micro-batch (1,536 evaluations)."""
    _oracle_equals_naive(3)


@pytest.mark.slow
def test_oracle_equals_a_naive_enumeration_on_four_layers() -> None:
    """4 layers: 8,192 evaluate_stages calls."""
    _oracle_equals_naive(4)


def test_oracle_pricing_matches_evaluate_stages() -> None:
    """Many random points of the space priced by the oracle and by evaluate_stages."""
    for seed in (1, 4):
        best = brute_force(random_instance(seed).problem, check_samples=100, seed=seed)
        assert best is not None


def test_identical_devices_are_not_permuted() -> None:
    cluster = Cluster.from_dict({"name": "same", "devices": [
        {"name": "a", "type": "T4", "memory_GiB": 2.0, "host": "h"},
        {"name": "b", "type": "T4", "memory_GiB": 2.0, "host": "h"},
        {"name": "c", "type": "T4", "memory_GiB": 2.0, "host": "other"},
    ]})  # fmt: skip
    orders = pipeline_orders(cluster)
    # kinds x (h) ×2 and y (other): x, y; xx, xy, yx; xxy, xyx, yxx
    assert len(orders) == 8


def test_random_instances_are_seeded() -> None:
    a, b = random_instance(5), random_instance(5)
    assert a.summary == b.summary
    assert np.array_equal(a.problem.omega, b.problem.omega)
    assert a.problem.theta == b.problem.theta and a.problem.omega_budget == b.problem.omega_budget
