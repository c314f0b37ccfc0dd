"""A bare notebook cell shows Cluster, Plan and CostModel as readable tables."""

from __future__ import annotations

from dataclasses import replace

from llmpq.cluster import load_cluster
from llmpq.costmodel import CostModel
from llmpq.html import html_table, runs
from llmpq.models.spec import model_spec
from llmpq.plan import MicroBatch, Plan, QualityTarget, Stage
from llmpq.workload import Workload


def test_html_table_escapes() -> None:
    html = html_table(["a<b"], [["<script>"]], caption="x & y")
    assert "&lt;script&gt;" in html and "a&lt;b" in html and "x &amp; y" in html


def test_runs() -> None:
    assert runs([4, 4, 8, 16, 16, 16]) == "4×2, 8, 16×3"
    assert runs([]) == "—"


def test_cluster_repr() -> None:
    html = load_cluster("config/clusters/paper_03.yaml")._repr_html_()
    assert html.startswith("<table") and "paper-03" in html
    assert html.count("<tr>") == 1 + 4  # header + one row per device


def test_plan_repr() -> None:
    spec = model_spec("opt-125m")
    plan = Plan("opt-125m", spec, Workload(4, 8, 2), "uniform",
                (Stage("t4-0", "T4", (0, 6), (4,) * 6), Stage("t4-1", "T4", (6, 12), (8,) * 6)),
                MicroBatch(2, 2, 2), cluster="c")  # fmt: skip
    html = plan._repr_html_()
    assert (
        "[0, 6)" in html and "4×6" in html and "8×6" in html and "uniform plan of opt-125m" in html
    )
    with_sum = replace(plan, quality=QualityTarget(sum_omega=1.5))  # no θ, no budget
    assert "Σω 1.5" in with_sum._repr_html_()
    assert "budget 2, Σω 1.5" in replace(plan, quality=QualityTarget(None, 2.0, 1.5))._repr_html_()


def test_cost_model_repr() -> None:
    html = CostModel.for_device("T4", model_spec("opt-13b"), costs_dir=None)._repr_html_()
    assert "opt-13b on T4" in html and "roofline" in html
    assert html.count("<tr>") == 1 + 4  # header + one row per bitwidth
