"""The picture of a plan: one bar per stage with its layers coloured by bits, memory used against
the budget, and the predicted tokens/s beside the baselines'.

Usage::

    from llmpq.widgets.pipeline import pipeline_figure

    fig = pipeline_figure(plan, cluster, {"pipeedge": other_plan, "uniform": "cannot hold ..."})
    fig.axes[0]        # the pipeline: one row per stage (stage 0 on top), one patch per layer

Axes, left to right: ``pipeline`` (x: decoder layer; a label ``[start, end)`` on every bar),
``memory`` (the plan's predicted peak against the device's budget; red above it) and
``tokens/s`` (this plan and each baseline; a baseline that has no plan shows "no plan").
"""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from llmpq.cluster import Cluster
from llmpq.plan import Plan
from llmpq.widgets.drawing import BIT_COLORS, new_figure

GiB, MiB = 1024**3, 1024**2
BUDGET_COLOR, USED_COLOR, OVER_COLOR = "#e0e0e0", "#5e8c61", "#b00020"
PLAN_COLOR, BASELINE_COLOR = "#4575b4", "#9e9e9e"


def _memory_unit(cluster: Cluster) -> tuple[float, str]:
    return (GiB, "GiB") if max(d.memory_bytes for d in cluster.devices) >= GiB else (MiB, "MiB")


def draw_layers(ax, plan: Plan) -> None:
    """One row per stage, stage 0 on top; each layer a unit-wide patch in its bits' colour."""
    n = len(plan.stages)
    for j, stage in enumerate(plan.stages):
        y = n - 1 - j
        start, end = stage.layers
        colors = [BIT_COLORS[b] for b in stage.bits]
        ax.barh([y] * len(colors), [1] * len(colors), left=list(range(start, end)),
                color=colors, edgecolor="white", linewidth=0.5, height=0.7)  # fmt: skip
        label = f"[{start}, {end})" if end > start else "no layers"
        ax.text((start + end) / 2 if end > start else 0, y, label, ha="center", va="center",
                fontsize=8, color="black", bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})  # fmt: skip
    ax.set_yticks(range(n), [s.device for s in reversed(plan.stages)])
    ax.set_xlim(0, plan.model_shape.num_layers)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("decoder layer")
    used = sorted(set(plan.bits_per_layer()))
    ax.legend(handles=[Patch(color=BIT_COLORS[b], label=f"{b}-bit") for b in used],
              loc="upper center", bbox_to_anchor=(0.5, -0.25 if n > 1 else -0.45), ncol=4,
              fontsize=8, frameon=False)  # fmt: skip
    ax.set_title(f"{plan.method}: {plan.model_id} in {n} stage(s)", fontsize=9)


def draw_memory(ax, plan: Plan, cluster: Cluster) -> None:
    """Predicted peak memory of each stage against its device's budget."""
    unit, name = _memory_unit(cluster)
    peak = plan.predicted.peak_memory_bytes if plan.predicted else {}
    n = len(plan.stages)
    for j, stage in enumerate(plan.stages):
        y = n - 1 - j
        budget = cluster.device(stage.device).memory_bytes / unit
        used = peak.get(stage.device, 0) / unit
        ax.barh(y, budget, color=BUDGET_COLOR, height=0.7)
        ax.barh(y, used, color=OVER_COLOR if used > budget else USED_COLOR, height=0.45)
        ax.text(budget, y, f" {used:.3g}/{budget:.3g}", va="center", fontsize=8)
    ax.set_yticks(range(n), [""] * n)
    ax.set_ylim(-0.6, n - 0.4)
    ax.margins(x=0.35)
    ax.set_xlabel(f"memory used / budget ({name})")


def draw_throughput(ax, plan: Plan, baselines: Mapping[str, Plan | str]) -> None:
    """Predicted tokens/s of the plan (on top) and of each baseline."""
    rows = [(plan.method, plan)] + [(m, p) for m, p in baselines.items() if m != plan.method]
    for i, (_, other) in enumerate(rows):
        y = len(rows) - 1 - i
        if isinstance(other, Plan) and other.predicted:
            value = other.predicted.tokens_per_s
            ax.barh(y, value, color=PLAN_COLOR if i == 0 else BASELINE_COLOR, height=0.6)
            ax.text(value, y, f" {value:.4g}", va="center", fontsize=8)
        else:
            ax.text(0, y, " no plan", va="center", fontsize=8, color=OVER_COLOR)
    ax.set_yticks(range(len(rows)), [m for m, _ in reversed(rows)])
    ax.margins(x=0.3)
    ax.set_xlabel("predicted tokens/s")


def pipeline_figure(
    plan: Plan, cluster: Cluster, baselines: Mapping[str, Plan | str] | None = None
) -> Figure:
    """The plan's pipeline, memory and throughput (see the module docstring)."""
    n = len(plan.stages)
    fig = new_figure(11, 1.6 + 0.45 * max(n, len(baselines or {}) + 1))
    ax_layers, ax_memory, ax_tps = fig.subplots(1, 3, width_ratios=[5, 2, 2])
    draw_layers(ax_layers, plan)
    draw_memory(ax_memory, plan, cluster)
    draw_throughput(ax_tps, plan, baselines or {})
    return fig
