"""The outer search: certified, deterministic, never worse than the baselines, clear errors."""

from __future__ import annotations

import json

import pytest

from llmpq.cluster import Cluster, load_cluster
from llmpq.errors import UserError
from llmpq.models.spec import model_spec
from llmpq.planner import SolverOptions, make_plan, planning_problem
from llmpq.planner.candidates import device_orders, micro_batches, order_classes
from llmpq.simulator import simulate
from llmpq.workload import Workload, load_workload

from .conftest import omega_array

PAPER = load_workload("config/workloads/paper.yaml")


def test_orders_span_every_device_subset_and_never_permute_identical_devices() -> None:
    cluster = load_cluster("config/clusters/paper_03.yaml")  # 3×T4 + V100
    orders, space = device_orders(cluster)
    # 3 T4 + V100: 4 places for the V100; 2 T4 + V100: 3; 1 T4 + V100: 2; V100 alone; 1-3 T4s
    assert len(orders) == 4 + 3 + 2 + 1 + 3 and space == "every ordered subset of the devices"
    assert len({tuple(d.name for d in o) for o in orders}) == len(orders)
    assert (cluster.device("v100-32g-0"),) in orders and (cluster.device("t4-0"),) in orders
    classes = order_classes(cluster, orders)
    assert sum(map(len, classes)) == len(orders)
    few, space = device_orders(cluster, limit=10)  # past the limit: kinds kept together
    assert space == "kinds kept together" and len(few) == 2 + 2 + 2 + 1 + 1 + 1 + 1
    fewer, space = device_orders(cluster, limit=5)  # and then each kind wholly or not at all
    assert space.endswith("wholly or not at all") and len(fewer) == 2 + 1 + 1


def test_micro_batches_search_the_decode_count() -> None:
    choices = micro_batches(Workload(32, 64, 8), num_devices=4)
    counts = {c.decode_count for c in choices}
    assert {1, 2, 4, 8} <= counts and max(counts) == 8
    assert all(c.decode_size * c.decode_count >= 32 for c in choices)
    assert all(32 % c.prefill_size == 0 for c in choices)


def _paper_problem(number: str, model: str, **quality):
    cluster = load_cluster(f"config/clusters/paper_{number}.yaml")
    spec = model_spec(model)
    return planning_problem(model, cluster, PAPER, costs_dir=None,
                            indicator=omega_array(spec.num_layers), **quality)  # fmt: skip


def test_same_inputs_give_byte_identical_plans(tmp_path) -> None:
    texts = []
    for _ in range(2):
        plan = make_plan(_paper_problem("03", "opt-30b", theta=100.0), "llmpq")
        d = plan.to_dict()
        d["solver"]["seconds"] = 0  # wall time is the one thing allowed to differ
        texts.append(json.dumps(d, sort_keys=True))
    assert texts[0] == texts[1]


def test_llmpq_is_certified_and_at_least_as_fast_as_every_baseline() -> None:
    base = _paper_problem("03", "opt-30b", theta=0.0)
    baselines = {m: make_plan(base, m) for m in ("pipeedge", "uniform", "adabits")}
    budget = max(p.quality.sum_omega for p in baselines.values())
    problem = base.with_quality(omega_budget=budget)
    plan = make_plan(problem, "llmpq", SolverOptions(time_limit_s=30, gap=0.005))
    assert plan.solver.status == "OPTIMAL" and plan.solver.gap <= 0.005
    assert plan.solver.bound <= plan.solver.objective
    assert plan.quality.sum_omega <= budget + 1e-9
    fastest = simulate(plan, problem).tokens_per_s
    for method, other in baselines.items():
        assert fastest >= simulate(other, problem).tokens_per_s * 0.999, method


def test_a_hard_budget_trades_speed_for_quality() -> None:
    loose = make_plan(_paper_problem("09", "opt-30b", theta=0.0), "llmpq")
    strict = make_plan(_paper_problem("09", "opt-30b", quality_budget=10.0), "llmpq")
    assert strict.quality.sum_omega <= 10.0 + 1e-9 < loose.quality.sum_omega
    assert strict.predicted.tokens_per_s <= loose.predicted.tokens_per_s


def test_per_layer_omega_gets_the_exact_assignment(small_problem) -> None:
    problem = small_problem(8, per_layer=True, memory_GiB=1.0)
    plan = make_plan(problem, "llmpq", SolverOptions(gap=0.0))
    assert plan.solver.status == "OPTIMAL"
    # inside a stage the most sensitive layers keep the higher bits
    for stage in plan.stages:
        rows = range(*stage.layers)
        pairs = sorted(zip((problem.omega[i, 0] for i in rows), stage.bits, strict=True))
        assert [b for _, b in pairs] == sorted(stage.bits, reverse=True) or len(
            set(stage.bits)
        ) == 1


def test_a_single_device_wins_when_the_other_only_slows_the_pipeline() -> None:
    cluster = Cluster.from_dict({"name": "mixed", "devices": [
        {"name": "fast", "type": "A100-80G", "host": "a"},
        {"name": "slow", "type": "T4", "host": "b"},  # across a 10 GbE link
    ]})  # fmt: skip
    spec = model_spec("opt-1.3b")
    problem = planning_problem("opt-1.3b", cluster, Workload(8, 128, 32), costs_dir=None,
                               indicator=omega_array(spec.num_layers), theta=0.0)  # fmt: skip
    plan = make_plan(problem, "llmpq")
    assert [s.device for s in plan.stages] == ["fast"]
    assert plan.solver.status == "OPTIMAL" and plan.solver.gap <= 1e-3
    (idle,) = plan.idle_devices
    assert idle.device == "slow" and "at least" in idle.reason and "lower bound" in idle.reason
    both = make_plan(problem, "uniform")  # the baseline must use both
    assert len(both.stages) == 2 and plan.predicted.makespan_s < both.predicted.makespan_s


def test_a_model_that_cannot_fit_is_one_clear_line() -> None:
    cluster = Cluster.from_dict({"name": "tiny", "devices": [{"type": "T4", "count": 2}]})
    spec = model_spec("opt-66b")
    problem = planning_problem("opt-66b", cluster, PAPER, costs_dir=None,
                               indicator=omega_array(spec.num_layers), theta=1.0)  # fmt: skip
    with pytest.raises(UserError) as err:
        make_plan(problem, "llmpq")
    text = str(err.value)
    assert "\n" not in text and "t4-" in text and "GiB" in text and "add a device" in text
    assert "hold at most" in text and "of its 64 layers" in text  # why: counted per device
    with pytest.raises(UserError, match="add a device"):
        make_plan(problem, "pipeedge")


def test_an_unreachable_budget_says_what_quality_fits() -> None:
    with pytest.raises(UserError, match="quality budget = 0.1 cannot be met.*raise it to at least"):
        make_plan(_paper_problem("09", "opt-30b", quality_budget=0.1), "llmpq")


def test_bad_quality_targets() -> None:
    with pytest.raises(UserError, match="only one"):
        _paper_problem("03", "opt-30b", theta=1.0, quality_budget=2.0)
    with pytest.raises(UserError, match="theta"):
        _paper_problem("03", "opt-30b", theta=-1.0)
    with pytest.raises(UserError, match="method"):
        make_plan(_paper_problem("03", "opt-30b", theta=1.0), "magic")


def test_highs_when_installed_finds_the_same_plan() -> None:
    pytest.importorskip("highspy", reason="HiGHS is optional: pip install 'mip[highs]'")
    problem = _paper_problem("03", "opt-30b", theta=100.0)
    cbc = make_plan(problem, "llmpq", SolverOptions("CBC", gap=1e-4))
    highs = make_plan(problem, "llmpq", SolverOptions("HiGHS", gap=1e-4))
    assert highs.solver.name == "HIGHS" and highs.solver.status == "OPTIMAL"
    assert highs.solver.objective == pytest.approx(cbc.solver.objective, rel=2e-4)


def test_a_short_time_limit_keeps_the_start_and_reports_an_honest_gap() -> None:
    problem = _paper_problem("07", "bloom-176b", theta=0.0)
    plan = make_plan(problem, "llmpq", SolverOptions(time_limit_s=0.01))
    assert plan.solver.status == "FEASIBLE" and plan.solver.gap > 0.002
    assert plan.solver.bound <= plan.solver.objective
    from llmpq.planner.search import search

    with pytest.raises(UserError, match="time limit .* ended before any plan was found"):
        search(problem, SolverOptions(time_limit_s=0.001))  # no baseline starts to fall back on


def test_a_cache_serves_every_theta_and_changes_nothing() -> None:
    from llmpq.planner import CoefficientCache

    base = _paper_problem("03", "opt-30b", theta=0.0)
    cache = CoefficientCache(base)
    for theta in (0.0, 100.0, 10000.0):
        problem = base.with_quality(theta=theta)
        cached, fresh = make_plan(problem, "llmpq", cache=cache), make_plan(problem, "llmpq")
        assert cached.stages == fresh.stages and cached.micro_batch == fresh.micro_batch
    assert cache.memo  # filled once, reused


def test_given_baseline_starts_are_not_planned_again_and_change_nothing(monkeypatch) -> None:
    from llmpq.planner import START_METHODS, baselines

    base = _paper_problem("03", "opt-30b", theta=0.0)
    starts = {m: make_plan(base, m) for m in START_METHODS}  # made under another target
    for theta in (0.0, 100.0):
        problem = base.with_quality(theta=theta)
        fresh = make_plan(problem, "llmpq")
        with monkeypatch.context() as patched:
            for name in START_METHODS:  # planning a baseline again would fail the test
                patched.setattr(baselines, name, lambda *a, **k: pytest.fail("planned again"))
            given = make_plan(problem, "llmpq", starts=starts)
        assert given.stages == fresh.stages and given.micro_batch == fresh.micro_batch
