"""The widgets without a browser: re-plan on change, the reason on bad input, the pipeline view
reflects the plan, and the other views draw from their plain functions."""

from __future__ import annotations

import json

import pytest
from matplotlib.colors import to_hex
from notebook_paths import NEEDS_EXTRA

pytest.importorskip("ipywidgets", reason=NEEDS_EXTRA)

# ruff: noqa: E402  (the skip must come before the widgets import ipywidgets)

from llmpq.cluster import Cluster
from llmpq.plan import Plan
from llmpq.planner import SolverOptions, make_plan, planning_problem
from llmpq.widgets import CostTableExplorer, ParetoExplorer, PlanExplorer, ServeResults
from llmpq.widgets.drawing import BIT_COLORS
from llmpq.widgets.pareto import ParetoPoint, frontier
from llmpq.widgets.pipeline import pipeline_figure
from llmpq.workload import Workload

# a small planning-track case where θ moves the bits: opt-6.7b on a T4 and a V100
DEVICES = {"T4": 1, "V100-16G": 1}
MODEL = "opt-6.7b"
WORKLOAD = Workload(32, 512, 100)


@pytest.fixture(scope="module")
def explorer() -> PlanExplorer:
    return PlanExplorer(devices=DEVICES, model=MODEL, workload=WORKLOAD, theta=1000.0)


def shown(out) -> list[str]:
    """The MIME types the Output widget shows, in order."""
    return [next(iter(o["data"])) for o in out.outputs]


def test_first_view_is_a_plan(explorer: PlanExplorer) -> None:
    assert explorer.error is None and isinstance(explorer.plan, Plan)
    assert shown(explorer.out) == ["image/png", "text/html"]
    assert "re-planned in" in explorer.status.value
    assert set(explorer.baselines) == {"pipeedge", "uniform", "adabits"}


def test_theta_change_replans(explorer: PlanExplorer) -> None:
    before, count = explorer.plan, explorer.replans
    explorer.theta.value = 0.01  # speed only: lower bits
    assert explorer.replans == count + 1
    after = explorer.plan
    assert after.quality.theta == pytest.approx(0.01)
    assert after.quality.sum_omega > before.quality.sum_omega
    assert after.predicted.tokens_per_s >= before.predicted.tokens_per_s
    html = explorer.out.outputs[1]["data"]["text/html"]
    assert "θ 0.01" in html
    explorer.theta.value = 1000.0
    assert explorer.plan.stages == before.stages  # deterministic


def test_budget_mode_replans(explorer: PlanExplorer) -> None:
    explorer.budget.value = 0.0
    explorer.target.value = "budget"
    try:
        assert explorer.error is None
        assert explorer.plan.quality.budget == 0.0 and explorer.plan.quality.sum_omega == 0.0
        assert set(explorer.plan.bits_per_layer()) == {16}
    finally:
        explorer.target.value = "theta"


def test_model_and_device_changes_replan(explorer: PlanExplorer) -> None:
    explorer.inputs.counts["V100-16G"].value = 2
    try:
        assert explorer.error is None and len(explorer.problem.cluster.devices) == 3
        assert {s.device for s in explorer.plan.stages} <= {"t4-0", "v100-16g-0", "v100-16g-1"}
    finally:
        explorer.inputs.counts["V100-16G"].value = 1
    assert len(explorer.problem.cluster.devices) == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"T4": 0, "V100-16G": 0}, "cluster.devices = [] is not a non-empty list"),
        ({"T4": -1}, "count = -1 is not a positive integer"),
        ({"model": "opt-175b"}, "cannot hold the model"),
        ({"model": "no-such-model"}, "is neither a directory nor a known model shape"),
        ({"batch_size": 0}, "workload.batch_size = 0"),
    ],
)
def test_bad_input_shows_the_reason_and_recovers(explorer, change, expected) -> None:
    controls = {**explorer.inputs.counts, "model": explorer.inputs.model,
                "batch_size": explorer.inputs.batch_size}  # fmt: skip
    saved = {k: controls[k].value for k in change}
    for key, value in change.items():
        controls[key].value = value
    assert explorer.plan is None and expected in explorer.error
    assert shown(explorer.out) == ["text/html"]
    assert expected in explorer.out.outputs[0]["data"]["text/plain"]
    assert "no plan" in explorer.status.value
    for key, value in saved.items():
        controls[key].value = value
    assert explorer.error is None and explorer.plan is not None  # the view keeps working


def test_cluster_file_source(explorer: PlanExplorer) -> None:
    explorer.inputs.cluster_file.value = "config/clusters/paper_03.yaml"
    explorer.inputs.model.value = "opt-13b"
    explorer.inputs.source.value = "file"
    try:
        assert explorer.error is None
        assert explorer.problem.cluster.name == "paper-03"
        explorer.inputs.cluster_file.value = "no/such.yaml"
        assert explorer.plan is None and "no/such.yaml" in explorer.error
    finally:
        explorer.inputs.source.value = "catalog"
        explorer.inputs.model.value = MODEL
    assert explorer.error is None


def test_pipeline_view_reflects_the_plan() -> None:
    cluster = Cluster.from_dict({"name": "x", "devices": [{"type": t} for t in DEVICES]})
    problem = planning_problem(MODEL, cluster, WORKLOAD, theta=100.0)
    plan = make_plan(problem, "llmpq", SolverOptions(time_limit_s=5, gap=0.05))
    fig = pipeline_figure(plan, cluster, {"uniform": make_plan(problem, "uniform"), "x": "none"})
    layers, memory, tps = fig.axes
    n = len(plan.stages)
    # one row per stage, stage 0 on top, one patch per layer in its bits' colour
    assert [t.get_text() for t in layers.get_yticklabels()] == [s.device for s in plan.stages][::-1]
    patches = layers.patches
    assert len(patches) == plan.model_shape.num_layers
    for patch, bits in zip(
        sorted(patches, key=lambda p: p.get_x()), plan.bits_per_layer(), strict=True
    ):
        assert to_hex(patch.get_facecolor()) == BIT_COLORS[bits]
    for j, stage in enumerate(plan.stages):
        rows = [p for p in patches if round(p.get_y() + p.get_height() / 2) == n - 1 - j]
        assert sorted(round(p.get_x()) for p in rows) == list(range(*stage.layers))
    labels = {t.get_text() for t in layers.texts}
    assert {f"[{s.layers[0]}, {s.layers[1]})" for s in plan.stages} <= labels
    # memory: budget and used bar per stage, used = the predicted peak
    used = [p.get_width() for p in memory.patches[1::2]]
    peaks = [plan.predicted.peak_memory_bytes[s.device] / 1024**3 for s in plan.stages]
    assert used == pytest.approx(peaks)
    # throughput: the plan first, then the baselines; "x" has no plan
    assert [t.get_text() for t in tps.get_yticklabels()] == ["x", "uniform", "llmpq"]
    assert tps.patches[0].get_width() == pytest.approx(plan.predicted.tokens_per_s)
    assert any("no plan" in t.get_text() for t in tps.texts)


def test_pareto_explorer() -> None:
    view = ParetoExplorer(devices=DEVICES, model=MODEL, workload=WORKLOAD,
                          log10_theta=(-1, 3), points=3)  # fmt: skip
    assert view.error is None and len(view.points) == 3
    assert shown(view.out) == ["image/png"]
    assert [p.theta for p in view.points] == pytest.approx([0.1, 10.0, 1000.0])
    view.inputs.counts["T4"].value = 0
    view.inputs.counts["V100-16G"].value = 0
    assert view.points == [] and "cluster.devices" in view.error


def test_frontier_keeps_the_non_dominated() -> None:
    pts = [ParetoPoint("llmpq", 1, 2.0, 100.0), ParetoPoint("llmpq", 2, 1.0, 90.0),
           ParetoPoint("llmpq", 3, 1.5, 80.0), ParetoPoint("llmpq", 4, 0.0, 50.0)]  # fmt: skip
    assert [p.theta for p in frontier(pts)] == [4, 2, 1]


def test_cost_table_explorer() -> None:
    view = CostTableExplorer(device="T4", model="opt-13b", bits=4, phase="decode")
    assert view.error is None and view.table.attrs["source"] == "roofline"
    assert shown(view.out) == ["image/png"] and "roofline" in view.caption.value
    view.phase.value = "prefill"
    assert view.error is None
    view.device.value = "P100-12G"  # no 8-bit or lower kernels on Pascal? then the reason
    view.bits.value = 3
    if 3 not in view.cost_model.bits:
        assert "no 3-bit kernels" in view.error
    view.model.value = "nope"
    assert view.table is None and "nope" in view.error


def test_serve_results(tmp_path) -> None:
    metrics = {
        "method": "llmpq", "measured": {"prefill_s": 1.0, "decode_s": 2.0, "makespan_s": 3.0,
                                        "tokens_per_s": 10.0},
        "predicted": {"prefill_s": 0.5, "decode_s": 2.5, "makespan_s": 3.0, "tokens_per_s": 9.0},
        "stages": [{"stage": i, "device": f"d{i}", "busy_s": 1.5, "peak_memory_bytes": 10 << 20,
                    "predicted_memory_bytes": 4 << 20, "budget_bytes": 8 << 20} for i in range(2)],
    }  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    view = ServeResults(tmp_path)
    assert view.error is None
    assert view.comparison.run["decode_s"] == (2.5, 2.0)
    assert [s.device for s in view.comparison.stages] == ["d0", "d1"]
    assert view.comparison.stages[0].predicted_busy_s is None  # no plan given: no simulation
    assert shown(view.out) == ["image/png", "text/html"]
    view.run.value = str(tmp_path / "missing")
    assert view.comparison is None and "does not exist" in view.error
