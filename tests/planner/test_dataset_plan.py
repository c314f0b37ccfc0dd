"""Planning for a dataset: the dataset schedule in the simulator, the concurrency as a decision,
dataset workloads (histogram YAML, prompts files)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from llmpq.dataset_workload import DatasetWorkload, load_any_workload
from llmpq.errors import UserError
from llmpq.plan import MicroBatch, load_plan, save_plan
from llmpq.planner.check import check_plan
from llmpq.planner.dataset import concurrency_candidates, plan_dataset
from llmpq.simulator import simulate, simulate_dataset
from llmpq.workload import Workload

from .test_time_model import _plan


@pytest.mark.parametrize("mb", [MicroBatch(8, 8, 1), MicroBatch(1, 8, 1), MicroBatch(4, 4, 2),
                                MicroBatch(2, 2, 4)], ids=str)  # fmt: skip
def test_one_batch_of_equal_requests_plays_like_the_fixed_schedule(small_problem, mb):
    """One group: the same items in the same order (exact up to the ring's last hop). Several:
    decode of a group starts once its own prefill is back, never later than the fixed
    schedule's start after every prefill."""
    problem = small_problem(6, memory_GiB=3.0)
    plan = _plan(problem, [3, 3], [16, 8], mb)
    fixed = simulate(plan, problem)
    for copies in (1, 10):
        d = DatasetWorkload.of("same", [128] * 8 * copies, [16] * 8 * copies)
        for refill in (True, False):
            sim = simulate_dataset(plan, problem, d, refill=refill)
            ratio = sim.makespan_s / (copies * fixed.makespan_s)
            if mb.decode_count == 1:
                assert ratio == pytest.approx(1.0, abs=1e-3)
            else:
                assert 0.95 < ratio <= 1.0 + 1e-9
            assert sim.generated_tokens == 8 * copies * 16 and sim.prompts == 8 * copies


def test_refill_beats_one_batch_when_outputs_vary(small_problem):
    problem = small_problem(6, memory_GiB=3.0)
    plan = _plan(problem, [3, 3], [16, 8], MicroBatch(2, 4, 2))
    rng = np.random.default_rng(0)
    d = DatasetWorkload.of("mixed", rng.integers(32, 256, 200), rng.integers(4, 128, 200))
    refill = simulate_dataset(plan, problem, d)
    one = simulate_dataset(plan, problem, d, refill=False)
    assert refill.makespan_s < 0.8 * one.makespan_s
    early = simulate_dataset(plan, problem, d, output_lens=d.max_new_tokens // 2)
    assert early.makespan_s < refill.makespan_s and early.generated_tokens < d.generated_tokens
    assert all(0 <= s.bubble_fraction < 1 for s in refill.stages)


def test_the_planner_chooses_the_concurrency(small_problem, tmp_path):
    problem = small_problem(6, memory_GiB=3.0)
    rng = np.random.default_rng(1)
    d = DatasetWorkload.of("mixed", rng.integers(32, 256, 300), rng.integers(4, 128, 300))
    plan = plan_dataset(problem, d, "llmpq")
    rec = plan.dataset
    fits = [c for c in rec.candidates if c["fits"]]
    assert [c["concurrency"] for c in rec.candidates] == concurrency_candidates(300)[
        : len(rec.candidates)]  # fmt: skip
    best = min(fits, key=lambda c: c["makespan_s"] * 1e3 + problem.theta * c["sum_omega"])
    assert rec.concurrency == plan.micro_batch.decode_size * plan.micro_batch.decode_count
    assert rec.concurrency >= best["concurrency"] and rec.prompts == 300
    assert rec.predicted["makespan_s"] == pytest.approx(
        simulate_dataset(plan, problem, d).makespan_s)  # fmt: skip
    assert sum(rec.prompt_lens["counts"]) == 300 and sum(rec.max_new_tokens["counts"]) == 300
    assert plan.memory_workload == Workload(
        plan.workload.batch_size, 255, int((d.prompt_lens + d.max_new_tokens).max()) - 255
    )
    save_plan(plan, tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again.dataset == rec
    check_plan(again, problem.cluster)
    assert len(fits) >= 3  # more than one concurrency was really weighed
    assert best["tokens_per_s"] > fits[0]["tokens_per_s"] * 1.5  # in flight pays


def test_memory_bounds_the_concurrency(small_problem):
    """Long contexts: the KV cache stops the growth; the chosen plan fits every slot at the
    longest prompt + limit."""
    problem = small_problem(6, memory_GiB=1.0)
    d = DatasetWorkload.of("long", [1500] * 64, [500] * 64)
    plan = plan_dataset(problem, d, "llmpq")
    tried = plan.dataset.candidates
    assert tried[-1]["fits"] is False and plan.dataset.concurrency < 64
    check_plan(plan, problem.cluster)
    C = tried[-1]["concurrency"]
    bigger = replace(plan, dataset=None, workload=Workload(C, 1500, 500),
                     micro_batch=MicroBatch(plan.micro_batch.prefill_size, C, 1))  # fmt: skip
    with pytest.raises(UserError, match="needs .* GiB but"):
        check_plan(bigger, problem.cluster)


def test_ten_thousand_requests_are_planned_from_their_histogram(small_problem):
    # how long it takes is measured by bench/paper_clusters.py, not asserted here
    problem = small_problem(6, memory_GiB=3.0)
    rng = np.random.default_rng(2)
    d = DatasetWorkload.of("big", rng.integers(16, 512, 10_000), rng.integers(8, 200, 10_000))
    plan = plan_dataset(problem, d, "llmpq")
    assert plan.dataset.prompts == 10_000


def test_histogram_workload_yaml(tmp_path):
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chat", "prompts": 10,
        "prompt_len": {"values": [32, 128, 512], "weights": [5, 3, 2]},
        "max_new_tokens": 64,
    }))  # fmt: skip
    d = load_any_workload(path)
    assert isinstance(d, DatasetWorkload) and d.count == 10 and d.name == "chat"
    assert sorted(d.prompt_lens.tolist()) == [32] * 5 + [128] * 3 + [512] * 2
    assert set(d.max_new_tokens.tolist()) == {64}
    assert d.time_shape(4) == Workload(4, round(d.prompt_lens.mean()), 64, "chat")
    assert d.memory_shape(4) == Workload(4, 512, 64, "chat")
    assert isinstance(load_any_workload("config/workloads/paper.yaml"), Workload)
    for bad, field in [({"prompts": 0, "prompt_len": 5, "max_new_tokens": 5}, "prompts"),
                       ({"prompts": 3, "prompt_len": {"values": [5], "weights": [1, 2]},
                         "max_new_tokens": 5}, "prompt_len"),
                       ({"prompts": 3, "prompt_len": 5, "max_new_tokens": -1}, "max_new_tokens"),
                       ({"prompts": 3, "prompt_len": 5, "max_new_tokens": 5, "x": 1}, "key")]:  # fmt: skip
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(UserError, match=field):
            load_any_workload(path)


def test_closed_form_of_the_dataset_agrees_with_the_simulator_on_simple_cases(small_problem):
    from llmpq.planner.time_model import dataset_makespan_s

    problem = small_problem(6, memory_GiB=3.0)
    for mb, tolerance in ((MicroBatch(8, 8, 1), 1e-3), (MicroBatch(4, 4, 2), 0.05)):
        plan = _plan(problem, [3, 3], [16, 8], mb)
        stages = [(problem.cluster.device(s.device), s.bits) for s in plan.stages]
        d = DatasetWorkload.of("same", [128] * 80, [16] * 80)
        closed = dataset_makespan_s(problem, stages, mb, d.prompt_lens, d.max_new_tokens)
        sim = simulate_dataset(plan, problem, d)
        assert sim.makespan_s == pytest.approx(closed, rel=tolerance), mb
    rng = np.random.default_rng(3)  # varied lengths: the steady state, tail aside
    d = DatasetWorkload.of("mixed", rng.integers(96, 160, 400), rng.integers(12, 20, 400))
    sub = replace(problem, workload=d.time_shape(8))
    plan = _plan(sub, [3, 3], [16, 8], MicroBatch(4, 4, 2))
    stages = [(sub.cluster.device(s.device), s.bits) for s in plan.stages]
    closed = dataset_makespan_s(sub, stages, plan.micro_batch, d.prompt_lens, d.max_new_tokens)
    assert simulate_dataset(plan, sub, d).makespan_s == pytest.approx(closed, rel=0.15)
