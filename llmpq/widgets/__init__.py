"""Notebook views over the library (the only package that imports ipywidgets).

Usage (in a notebook; ``pip install -e ".[notebooks]"``)::

    from llmpq.widgets import CostTableExplorer, PlanExplorer, ParetoExplorer, ServeResults

    CostTableExplorer(model="opt-13b")                   # latency vs batch and seq, points + curve
    PlanExplorer(devices={"T4": 2, "V100-16G": 2}, model="llama-2-13b")   # re-plans on change
    ParetoExplorer(cluster="config/clusters/paper_03.yaml", model="opt-30b")   # over θ
    ServeResults("results/serve/cpu-hetero/cpu_small/llmpq")      # predicted vs measured

Each view is a thin layer over plain functions (``cost_points``, ``make_plan``,
``pareto_points``, ``serve_comparison``) that the tests call directly; each draws with matplotlib
into an ``Output`` widget and shows a one-line reason in place of the plot on bad input.
Modules: :mod:`~llmpq.widgets.drawing` (shared helpers), :mod:`~llmpq.widgets.inputs` (cluster,
model and workload controls), :mod:`~llmpq.widgets.pipeline` (the picture of a plan),
:mod:`~llmpq.widgets.cost_tables`, :mod:`~llmpq.widgets.plan_explorer`,
:mod:`~llmpq.widgets.pareto`, :mod:`~llmpq.widgets.serve_results`.
"""

from llmpq.widgets.cost_tables import CostTableExplorer
from llmpq.widgets.pareto import ParetoExplorer
from llmpq.widgets.plan_explorer import PlanExplorer
from llmpq.widgets.serve_results import ServeResults

__all__ = ["CostTableExplorer", "ParetoExplorer", "PlanExplorer", "ServeResults"]
