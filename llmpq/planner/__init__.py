"""The planner: pipeline partition, per-layer bits and micro-batches, jointly (python-mip).

Usage::

    from llmpq.planner import make_plan, planning_problem, SolverOptions

    problem = planning_problem("opt-30b", cluster, workload, theta=1.0)   # or quality_budget=
    plan = make_plan(problem, "llmpq", SolverOptions(time_limit_s=10, gap=0.01))
    plan.stages, plan.micro_batch, plan.predicted.tokens_per_s, plan.solver.gap
    make_plan(problem, "pipeedge")                  # baselines: pipeedge | uniform | adabits

Modules: :mod:`~llmpq.planner.problem` (inputs), :mod:`~llmpq.planner.time_model` (the
closed-form time model), :mod:`~llmpq.planner.ilp` (the ILP, built apart from the solve),
:mod:`~llmpq.planner.candidates` and :mod:`~llmpq.planner.search` (the outer search and its
certificate), :mod:`~llmpq.planner.baselines`, :mod:`~llmpq.planner.reference` (the original
paper's ILP, for comparison).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from llmpq.errors import UserError
from llmpq.plan import IdleDevice, Plan, Prediction, QualityTarget, SolverReport, Stage
from llmpq.planner.ilp import DEFAULT_SOLVER, SolverOptions
from llmpq.planner.problem import PlanningProblem, planning_problem
from llmpq.planner.search import CoefficientCache, Incumbent, search
from llmpq.planner.time_model import Evaluation, evaluate_stages

METHODS = ("llmpq", "pipeedge", "uniform", "adabits")
START_METHODS = METHODS[1:]  # the baselines llmpq's search starts from

__all__ = [
    "METHODS",
    "CoefficientCache",
    "Evaluation",
    "PlanningProblem",
    "SolverOptions",
    "evaluate_stages",
    "make_plan",
    "plan_from_incumbent",
    "planning_problem",
]


def plan_from_incumbent(
    problem: PlanningProblem,
    found: Incumbent,
    method: str,
    solver: SolverReport,
    idle: tuple[IdleDevice, ...] | None = None,
) -> Plan:
    """A validated :class:`~llmpq.plan.Plan` with the time model's predictions."""
    stages, start = [], 0
    for device, bits in found.stages:
        stages.append(Stage(device.name, device.type.name, (start, start + len(bits)), tuple(bits)))
        start += len(bits)
    ev = evaluate_stages(problem, found.stages, found.micro_batch)
    if not ev.fits:
        device, over = next(iter(ev.over_budget.items()))
        raise UserError(
            "plan", method, "report this: the planner's memory model and the exact one disagree",
            problem=f"puts {over} bytes too many on {device}",
        )  # fmt: skip
    return Plan(
        model_id=problem.model_id,
        model_shape=problem.spec,
        workload=problem.workload,
        method=method,
        stages=tuple(stages),
        micro_batch=found.micro_batch,
        cluster=problem.cluster.name,
        predicted=Prediction(
            ev.prefill_s, ev.decode_s, ev.makespan_s, ev.tokens_per_s, dict(ev.peak_memory_bytes)
        ),
        solver=solver,
        quality=QualityTarget(
            theta=problem.theta, budget=problem.omega_budget, sum_omega=ev.sum_omega
        ),
        idle_devices=idle if idle is not None else _left_out(problem, found, method),
    )


def _left_out(problem: PlanningProblem, found: Incumbent, method: str) -> tuple[IdleDevice, ...]:
    names = {d.name for d in found.order}
    return tuple(IdleDevice(d.name, f"{method} gave it no layers")
                 for d in problem.cluster.devices if d.name not in names)  # fmt: skip


def make_plan(
    problem: PlanningProblem,
    method: str = "llmpq",
    options: SolverOptions = DEFAULT_SOLVER,
    cache: CoefficientCache | None = None,
    starts: Mapping[str, Plan] | None = None,
) -> Plan:
    """Plan with ``method``; llmpq's search starts from the baselines that meet the target.
    ``cache`` (a :class:`CoefficientCache` of the problem) makes re-planning under another θ or
    budget cheaper, and so does ``starts``: baseline plans already made for this model, cluster
    and workload, by method (the search re-prices them under this problem's target; the
    baselines of ``START_METHODS`` not given are planned here)."""
    from llmpq.planner import baselines

    if method not in METHODS:
        raise UserError("method", method, f"use one of {list(METHODS)}")
    clock = time.perf_counter()
    if method != "llmpq":
        found = {"pipeedge": baselines.pipeedge, "uniform": baselines.uniform,
                 "adabits": lambda p: baselines.adabits(p, options)}[method](problem)  # fmt: skip
        report = SolverReport(
            {"pipeedge": "dynamic programming", "uniform": "even split",
             "adabits": options.name}[method], "OPTIMAL", None, None, None,
            time.perf_counter() - clock,
        )  # fmt: skip
        return plan_from_incumbent(problem, found, method, report)
    given = dict(starts or {})
    start_plans = []
    for name in START_METHODS:  # inside the search space: never worse
        if name in given:
            start_plans.append(given[name])
            continue
        try:
            found = (baselines.adabits(problem, options) if name == "adabits"
                     else getattr(baselines, name)(problem))  # fmt: skip
            start_plans.append(
                plan_from_incumbent(problem, found, name, SolverReport(name, "start"))
            )
        except UserError:
            pass
    result = search(problem, options, starts=start_plans, cache=cache)
    report = SolverReport(
        options.name.upper(), result.status, result.objective, result.bound, result.gap,
        time.perf_counter() - clock, result.space,
    )  # fmt: skip
    return plan_from_incumbent(problem, result.best, "llmpq", report, result.idle)
