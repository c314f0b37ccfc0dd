"""PlanExplorer: change the cluster, model, workload or quality target and see the new plan.

Usage (in a notebook)::

    from llmpq.widgets import PlanExplorer

    explorer = PlanExplorer(devices={"T4": 2, "V100-16G": 2}, model="llama-2-13b", theta=10.0)
    explorer                                   # the controls and the pipeline view
    explorer.theta.value = 100.0               # re-plans (as moving the slider does)
    explorer.plan, explorer.error, explorer.seconds, explorer.baselines

Every change re-plans: the problem for (model, cluster, workload) is gathered once and cached,
θ or the quality budget is applied to it (``PlanningProblem.with_quality``), llmpq's planner
runs under ``options`` and the baselines (which do not depend on the quality target) are
planned once per problem. The view shows the pipeline (:func:`~llmpq.widgets.pipeline.pipeline_figure`)
and the plan's table; bad input (no device, an unknown model, a model that does not fit) shows
the planner's one-line reason instead, and the explorer keeps working.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as W

from llmpq.plan import Plan
from llmpq.planner import CoefficientCache, PlanningProblem, SolverOptions, make_plan
from llmpq.widgets.drawing import error_message, run_guarded, show
from llmpq.widgets.inputs import ProblemInputs
from llmpq.widgets.pipeline import pipeline_figure

# Short enough to keep a re-plan interactive, long enough for the search to certify small cases.
FAST_SOLVER = SolverOptions(time_limit_s=2.0, gap=0.05)
BASELINES = ("pipeedge", "uniform", "adabits")
THETA_SOURCE, BUDGET_SOURCE = "theta", "budget"


def plan_baselines(problem: PlanningProblem, methods: Sequence[str] = BASELINES,
                   options: SolverOptions = FAST_SOLVER) -> dict[str, Plan | str]:  # fmt: skip
    """Each baseline's plan, or the one-line reason it has none."""
    out: dict[str, Plan | str] = {}
    for method in methods:
        try:
            out[method] = make_plan(problem, method, options)
        except Exception as err:  # noqa: BLE001 - a baseline without a plan is a result here
            out[method] = error_message(err)
    return out


class PlanExplorer:
    """Controls for the inputs and the quality target, a status line and the pipeline view."""

    def __init__(
        self,
        *,
        theta: float = 1.0,
        quality_budget: float | None = None,
        options: SolverOptions = FAST_SOLVER,
        baselines: Sequence[str] = BASELINES,
        **inputs: Any,
    ) -> None:
        """``inputs``: the keywords of :class:`~llmpq.widgets.inputs.ProblemInputs` (``devices``
        or ``cluster``, ``model``, ``workload``, ``costs_dir``, ``indicator``)."""
        self.options, self.baseline_methods = options, tuple(baselines)
        self.inputs = ProblemInputs(**inputs)
        self.target = W.ToggleButtons(
            options=[("θ (speed vs quality)", THETA_SOURCE), ("quality budget Σω", BUDGET_SOURCE)],
            value=BUDGET_SOURCE if quality_budget is not None else THETA_SOURCE,
            style={"button_width": "auto"},
        )
        self.theta = W.FloatLogSlider(
            value=max(theta, 1e-3), base=10, min=-3, max=4, step=0.1, description="θ",
            continuous_update=False, readout_format=".3g", layout=W.Layout(width="500px"),
        )  # fmt: skip
        self.budget = W.FloatText(value=quality_budget or 0.0, description="budget Σω")
        self.status = W.HTML()
        self.out = W.Output()
        self.plan: Plan | None = None
        self.problem: PlanningProblem | None = None
        self.baselines: dict[str, Plan | str] = {}
        self.error: str | None = None
        self.seconds = 0.0
        self.replans = 0
        self._baseline_cache: dict[int, dict[str, Plan | str]] = {}
        self._coefficients: CoefficientCache | None = None  # reused while only θ/budget moves
        self.inputs.observe(self.replan)
        for control in (self.target, self.theta, self.budget):
            control.observe(lambda _: self.replan(), names="value")
        self.widget = W.VBox([self.inputs.widget, self.target, self.theta, self.budget,
                              self.status, self.out])  # fmt: skip
        self.replan()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _target_problem(self) -> PlanningProblem:
        base = self.inputs.problem()
        if self.target.value == BUDGET_SOURCE:
            return base.with_quality(omega_budget=self.budget.value)
        return base.with_quality(theta=self.theta.value)

    def replan(self) -> None:
        """Plan for the current controls and redraw (never raises: errors are shown)."""
        clock = time.perf_counter()
        self.replans += 1
        self.plan = None
        problem, self.error = run_guarded(self.out, self._target_problem)
        self.problem = problem
        if problem is not None:
            if self._coefficients is None or not self._coefficients.serves(problem):
                self._coefficients = CoefficientCache(problem)
            cache = self._coefficients
            key = id(self.inputs.problem())  # baselines do not depend on the quality target
            if key not in self._baseline_cache:
                self._baseline_cache = {
                    key: plan_baselines(problem, self.baseline_methods, self.options)
                }
            self.baselines = self._baseline_cache[key]
            starts = {m: p for m, p in self.baselines.items() if isinstance(p, Plan)}
            self.plan, self.error = run_guarded(
                self.out, lambda: make_plan(problem, "llmpq", self.options, cache, starts)
            )
        if self.plan is not None:
            figure = pipeline_figure(self.plan, problem.cluster, self.baselines)
            show(self.out, figure,
                 f"<div class='llmpq-plan-summary'>{self.plan._repr_html_()}</div>")  # fmt: skip
        self.seconds = time.perf_counter() - clock
        self.status.value = self._status_line()

    def _status_line(self) -> str:
        if self.plan is None:
            return f"<span class='llmpq-status'>no plan ({self.seconds:.2f} s)</span>"
        s, q = self.plan.solver, self.plan.quality
        gap = f", gap {s.gap:.1%}" if s and s.gap is not None else ""
        omega = f", Σω {q.sum_omega:.4g}" if q and q.sum_omega is not None else ""
        text = (f"re-planned in {self.seconds:.2f} s: {self.plan.predicted.tokens_per_s:.4g} "
                f"tokens/s{omega} ({s.status if s else ''}{gap})")  # fmt: skip
        return f"<span class='llmpq-status'>{html.escape(text)}</span>"
