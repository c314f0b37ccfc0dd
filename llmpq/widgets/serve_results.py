"""ServeResults: what a serving run measured against what the plan predicted, per stage.

Usage::

    from llmpq.widgets.serve_results import ServeResults, serve_comparison, load_metrics

    ServeResults("results/serve/cpu-hetero/cpu_small/llmpq", plan=plan, cluster=cluster)
    cmp = serve_comparison(load_metrics(out_dir), simulate(plan, problem))
    cmp.stages[0].measured_busy_s, cmp.stages[0].predicted_busy_s, cmp.run["makespan_s"]

``metrics.json`` (written by ``llmpq serve``, :mod:`llmpq.runtime.metrics`) holds the measured
figures, the plan's whole-run prediction and, per stage, the measured busy time and peak memory
beside the memory model's prediction and the budget. A stage's predicted busy time is not in it:
give the plan and its cluster and the event simulator (:func:`llmpq.simulator.simulate`) prices
it. Measured CPU memory is the process's peak resident set (the Python and torch runtime
included), so it sits above the model's prediction by that runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from llmpq.cluster import Cluster, load_cluster
from llmpq.costmodel.model import DEFAULT_COSTS_DIR
from llmpq.errors import UserError
from llmpq.html import html_table
from llmpq.plan import Plan, load_plan
from llmpq.simulator import SimResult, problem_for_plan, simulate
from llmpq.widgets.drawing import new_figure, run_guarded, show

RUN_FIGURES = ("prefill_s", "decode_s", "makespan_s")
MiB = 1024**2


@dataclass(frozen=True)
class StageComparison:
    stage: int
    device: str
    measured_busy_s: float
    predicted_busy_s: float | None  # from the simulator, when the plan is given
    measured_memory_bytes: int
    predicted_memory_bytes: int | None
    budget_bytes: int | None


@dataclass(frozen=True)
class ServeComparison:
    method: str
    run: dict[str, tuple[float | None, float]]  # figure -> (predicted, measured)
    stages: tuple[StageComparison, ...]


def load_metrics(path: str | Path) -> dict[str, Any]:
    """A serve run's ``metrics.json`` (give the file or the run's output directory)."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError("metrics", str(path), "run `llmpq serve ... --out DIR` and give DIR",
                        problem="does not exist")  # fmt: skip
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(str(path), f"line {err.lineno}", "rerun llmpq serve",
                        "is not valid JSON") from None  # fmt: skip
    if not isinstance(data, dict) or "measured" not in data or "stages" not in data:
        raise UserError(str(path), "its keys", "give a metrics.json written by llmpq serve",
                        "lacks measured or stages")  # fmt: skip
    return data


def serve_comparison(metrics: dict[str, Any], sim: SimResult | None = None) -> ServeComparison:
    """Predicted against measured, for the whole run and per stage."""
    predicted = metrics.get("predicted") or {}
    names = [*RUN_FIGURES, "tokens_per_s"]
    run = {n: (predicted.get(n), metrics["measured"][n]) for n in names}
    sim_busy = {s.device: s.busy_s for s in sim.stages} if sim else {}
    stages = tuple(
        StageComparison(
            int(s.get("stage", i)),
            str(s["device"]),
            float(s["busy_s"]),
            sim_busy.get(s["device"]),
            int(s.get("peak_memory_bytes", 0)),
            s.get("predicted_memory_bytes"),
            s.get("budget_bytes"),
        )  # fmt: skip
        for i, s in enumerate(metrics["stages"])
    )
    return ServeComparison(str(metrics.get("method", "")), run, stages)


def _pairs(ax, labels, predicted, measured, unit: str) -> None:
    x = np.arange(len(labels))
    ax.bar(x - 0.2, [np.nan if p is None else p for p in predicted], 0.4, label="predicted",
           color="#9e9e9e")  # fmt: skip
    ax.bar(x + 0.2, measured, 0.4, label="measured", color="#4575b4")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(unit)
    ax.legend(fontsize=7)


def serve_figure(cmp: ServeComparison) -> Figure:
    """Run times, per-stage busy time and per-stage memory: predicted beside measured."""
    fig = new_figure(11, 3.2)
    ax_run, ax_busy, ax_mem = fig.subplots(1, 3)
    _pairs(ax_run, list(RUN_FIGURES), [cmp.run[n][0] for n in RUN_FIGURES],
           [cmp.run[n][1] for n in RUN_FIGURES], "s")  # fmt: skip
    ax_run.set_title(f"{cmp.method}: whole run", fontsize=9)
    devices = [s.device for s in cmp.stages]
    _pairs(ax_busy, devices, [s.predicted_busy_s for s in cmp.stages],
           [s.measured_busy_s for s in cmp.stages], "busy s")  # fmt: skip
    ax_busy.set_title("per stage: compute time", fontsize=9)
    _pairs(ax_mem, devices, [None if s.predicted_memory_bytes is None
                             else s.predicted_memory_bytes / MiB for s in cmp.stages],
           [s.measured_memory_bytes / MiB for s in cmp.stages], "MiB")  # fmt: skip
    for i, s in enumerate(cmp.stages):
        if s.budget_bytes:
            ax_mem.hlines(s.budget_bytes / MiB, i - 0.45, i + 0.45, color="#b00020",
                          label="budget" if i == 0 else None)  # fmt: skip
    ax_mem.set_yscale("log")  # measured CPU RSS includes the runtime: orders above the model
    ax_mem.set_title("per stage: peak memory (measured: process RSS)", fontsize=9)
    return fig


def comparison_html(cmp: ServeComparison) -> str:
    def fmt(v):
        return "—" if v is None else f"{v:.4g}"

    rows = [[n, fmt(p), fmt(m), fmt(m / p) if p else "—"] for n, (p, m) in cmp.run.items()]
    return html_table(["figure", "predicted", "measured", "measured/predicted"], rows,
                      f"serve run of the {cmp.method} plan")  # fmt: skip


class ServeResults:
    """A serve run's output directory (or metrics.json) over :func:`serve_figure`."""

    def __init__(
        self,
        run: str | Path = "",
        *,
        plan: Plan | str | Path | None = None,
        cluster: Cluster | str | Path | None = None,
        costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
        serve_dir: str | Path = "results/serve",
    ) -> None:
        self.plan_arg, self.cluster_arg, self.costs_dir = plan, cluster, costs_dir
        found = sorted(str(p.parent) for p in Path(serve_dir).glob("**/metrics.json"))
        self.run = W.Combobox(value=str(run), options=found, ensure_option=False,
                              description="serve run", continuous_update=False,
                              layout=W.Layout(width="560px"))  # fmt: skip
        self.out = W.Output()
        self.comparison: ServeComparison | None = None
        self.error: str | None = None
        self.run.observe(lambda _: self.redraw(), names="value")
        self.widget = W.VBox([self.run, self.out])
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _simulated(self) -> SimResult | None:
        if self.plan_arg is None or self.cluster_arg is None:
            return None
        plan = self.plan_arg if isinstance(self.plan_arg, Plan) else load_plan(self.plan_arg)
        cluster = (self.cluster_arg if isinstance(self.cluster_arg, Cluster)
                   else load_cluster(self.cluster_arg))  # fmt: skip
        return simulate(plan, problem_for_plan(plan, cluster, self.costs_dir))

    def _compare(self) -> ServeComparison:
        return serve_comparison(load_metrics(self.run.value), self._simulated())

    def redraw(self) -> None:
        """Load the run and draw (never raises: errors are shown)."""
        self.comparison, self.error = run_guarded(self.out, self._compare)
        if self.comparison is not None:
            show(self.out, serve_figure(self.comparison), comparison_html(self.comparison))
