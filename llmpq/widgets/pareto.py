"""ParetoExplorer: the throughput–quality frontier over θ for one cluster, baselines as points.

Usage::

    from llmpq.widgets.pareto import ParetoExplorer, pareto_points, frontier, pareto_figure

    ParetoExplorer(devices={"T4": 1, "V100-16G": 1}, model="opt-6.7b")     # in a notebook
    points = pareto_points(problem, thetas=[0.1, 1, 10, 100, 1000])          # one llmpq plan per θ
    frontier(points)          # the points no other beats on both tokens/s and Σω

θ prices Σω in milliseconds of makespan (:mod:`llmpq.planner.problem`): a small θ buys speed
with aggressive bits, a large one keeps quality. Each θ is one ``make_plan`` call, so a sweep
of ``n`` values takes ``n`` re-plans; the baselines (θ-independent) are planned once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from llmpq.errors import UserError
from llmpq.plan import Plan
from llmpq.planner import PlanningProblem, SolverOptions, make_plan
from llmpq.widgets.drawing import new_figure, run_guarded, show
from llmpq.widgets.inputs import ProblemInputs
from llmpq.widgets.plan_explorer import BASELINES, FAST_SOLVER, plan_baselines


@dataclass(frozen=True)
class ParetoPoint:
    """One plan on the throughput–quality plane."""

    method: str
    theta: float | None  # None for the baselines
    sum_omega: float
    tokens_per_s: float

    @classmethod
    def of(cls, plan: Plan, theta: float | None = None) -> ParetoPoint:
        return cls(plan.method, theta, plan.quality.sum_omega, plan.predicted.tokens_per_s)


def pareto_points(
    problem: PlanningProblem, thetas: Sequence[float], options: SolverOptions = FAST_SOLVER
) -> list[ParetoPoint]:
    """llmpq's plan at every θ; UserError (the first reason) if no θ gives a plan."""
    points, reasons = [], []
    for theta in thetas:
        try:
            plan = make_plan(problem.with_quality(theta=float(theta)), "llmpq", options)
            points.append(ParetoPoint.of(plan, float(theta)))
        except UserError as err:
            reasons.append(err)
    if not points and reasons:
        raise reasons[0]
    return points


def frontier(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The non-dominated points (higher tokens/s, lower Σω), by increasing Σω."""
    best: list[ParetoPoint] = []
    for p in sorted(points, key=lambda p: (p.sum_omega, -p.tokens_per_s)):
        if not best or p.tokens_per_s > best[-1].tokens_per_s:
            best.append(p)
    return best


def pareto_figure(
    points: Sequence[ParetoPoint], baselines: Mapping[str, Plan | str] | None = None
) -> Figure:
    """Σω against predicted tokens/s: llmpq's points over θ, its frontier, the baselines."""
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.plot([p.sum_omega for p in points], [p.tokens_per_s for p in points], "o", color="C0",
            alpha=0.5, label="llmpq over θ")  # fmt: skip
    front = frontier(points)
    ax.plot([p.sum_omega for p in front], [p.tokens_per_s for p in front], "-", color="C0",
            drawstyle="steps-post", label="frontier")  # fmt: skip
    for p in front:
        ax.annotate(f"θ={p.theta:.3g}", (p.sum_omega, p.tokens_per_s), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    for marker, (method, plan) in zip("sD^v", (baselines or {}).items(), strict=False):
        if isinstance(plan, Plan):
            b = ParetoPoint.of(plan)
            ax.plot(b.sum_omega, b.tokens_per_s, marker, markersize=8, label=method)
    ax.set_xlabel("Σω (lower: closer to the 16-bit model)")
    ax.set_ylabel("predicted tokens/s")
    ax.legend(fontsize=8)
    return fig


class ParetoExplorer:
    """Inputs, a θ range and a point count over :func:`pareto_points` and :func:`pareto_figure`."""

    def __init__(
        self,
        *,
        log10_theta: tuple[float, float] = (-1.0, 3.0),
        points: int = 6,
        options: SolverOptions = FAST_SOLVER,
        **inputs: Any,
    ) -> None:
        """``inputs``: the keywords of :class:`~llmpq.widgets.inputs.ProblemInputs`."""
        self.options = options
        self.inputs = ProblemInputs(**inputs)
        self.log10_theta = W.FloatRangeSlider(value=log10_theta, min=-3, max=4, step=0.5,
                                              description="log10 θ", continuous_update=False)  # fmt: skip
        self.count = W.IntSlider(value=points, min=2, max=12, description="points",
                                 continuous_update=False)  # fmt: skip
        self.out = W.Output()
        self.points: list[ParetoPoint] = []
        self.baselines: dict[str, Plan | str] = {}
        self.error: str | None = None
        self.inputs.observe(self.sweep)
        for control in (self.log10_theta, self.count):
            control.observe(lambda _: self.sweep(), names="value")
        self.widget = W.VBox([self.inputs.widget, self.log10_theta, self.count, self.out])
        self.sweep()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def thetas(self) -> list[float]:
        low, high = self.log10_theta.value
        return [float(t) for t in np.logspace(low, high, self.count.value)]

    def sweep(self) -> None:
        """Plan every θ of the range and redraw (never raises: errors are shown)."""
        self.points, self.baselines = [], {}
        problem, self.error = run_guarded(self.out, self.inputs.problem)
        if problem is None:
            return
        points, self.error = run_guarded(
            self.out, lambda: pareto_points(problem, self.thetas, self.options)
        )
        if points is None:
            return
        self.points = points
        self.baselines = plan_baselines(problem, BASELINES, self.options)
        show(self.out, pareto_figure(self.points, self.baselines))
