"""The matrix LP bound is the python-mip model's LP relaxation (one mathematics, two encodings)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from llmpq.plan import MicroBatch
from llmpq.planner.ilp import SolverOptions, build_model, instance_for
from llmpq.planner.relaxation import lp_bound


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """CBC's LP path prints its log on file descriptor 1 whatever the verbosity: mute it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@pytest.mark.parametrize("per_layer", [False, True])
@pytest.mark.parametrize("mb", [MicroBatch(8, 8, 1), MicroBatch(2, 4, 2), MicroBatch(1, 2, 4)])
@pytest.mark.parametrize("quality", [{}, {"quality_budget": 3.0}])
def test_matrix_lp_equals_the_models_relaxation(small_problem, per_layer, mb, quality) -> None:
    problem = small_problem(6, per_layer=per_layer, memory_GiB=1.0, **quality)
    for order in (problem.cluster.devices, problem.cluster.devices[::-1]):
        inst = instance_for(problem, order, mb)
        model, _ = build_model(inst, SolverOptions(), relaxed_layers=True)
        with _quiet_stdout():
            model.optimize(relax=True)
        assert lp_bound(inst) == pytest.approx(model.objective_value, rel=1e-6)


def test_an_infeasible_lp_is_an_infinite_bound(small_problem) -> None:
    problem = small_problem(6, memory_GiB=0.3)
    assert lp_bound(instance_for(problem, problem.cluster.devices, MicroBatch(8, 8, 1))) == float(
        "inf"
    )


@pytest.mark.parametrize("per_layer", [False, True])
def test_the_two_phase_bounds_add_up_to_at_most_the_joint_bound(small_problem, per_layer) -> None:
    problem = small_problem(6, per_layer=per_layer, memory_GiB=1.0, theta=20.0)
    inst = instance_for(problem, problem.cluster.devices, MicroBatch(2, 4, 2))
    split = lp_bound(inst, "prefill") + lp_bound(inst, "decode")
    assert 0 < split <= lp_bound(inst) * (1 + 1e-9)
