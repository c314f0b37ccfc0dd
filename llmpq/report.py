"""The workflow's report: one summary table and three figures from the result files.

Usage::

    from llmpq.report import summary_table, write_report

    table = summary_table(plans, sims, serves, quality, reference="results/quality/default/bits16.json")
    table[["cluster", "variant", "predicted_tokens_per_s", "served_tokens_per_s", "perplexity"]]
    write_report(plans, sims, serves, quality, reference=..., outputs={
        "table": "summary.csv", "markdown": "summary.md", "throughput": "throughput.png",
        "frontier": "frontier.png", "timeline": "timeline.png"})

Files are matched by their place in the data flow (docs/design.md): ``plans/<cluster>/<workload>/
<variant>.json``, ``sim/…/<variant>.json``, ``quality/…/<variant>.json`` and ``serve/…/<variant>/
metrics.json``, where a variant is a method (``pipeedge``) or llmpq with its quality target
(``llmpq-theta1``, ``llmpq-eps2``). A plan file may instead hold a *no-plan record*
(:func:`no_plan_record`): the method cannot fit the model on that cluster; the stages after
``plan`` pass the record on and the table shows the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmpq.errors import UserError
from llmpq.files import write_text_atomic

NO_PLAN_KEY = "no_plan"
# UserError fields the planner uses for "this cluster cannot hold the model (at this quality)".
NO_PLAN_FIELDS = ("cluster", "quality budget")

COLUMNS = (
    "track", "cluster", "workload", "variant", "method", "theta", "model", "stages", "bits",
    "predicted_tokens_per_s", "simulated_tokens_per_s", "served_tokens_per_s",
    "served_over_predicted", "perplexity", "ppl_increase_pct", "sum_omega", "planning_s",
    "solver_gap", "no_plan",
)  # fmt: skip


def no_plan_record(method: str, cluster: str, err: UserError) -> dict[str, Any]:
    """What a plan file holds when ``method`` finds no plan that fits ``cluster``."""
    return {NO_PLAN_KEY: str(err), "method": method, "cluster": cluster}


def no_plan_reason(data: Mapping[str, Any]) -> str | None:
    return data.get(NO_PLAN_KEY)


def _key(path: str | Path, depth: int = 0) -> tuple[str, str, str]:
    """(cluster, workload, variant) of a result file; ``depth`` extra folder levels (serve: 1)."""
    p = Path(path)
    for _ in range(depth):
        p = p.parent
    return p.parent.parent.name, p.parent.name, p.stem if depth == 0 else p.name


def _load(paths: Sequence[str | Path], depth: int = 0) -> dict[tuple[str, str, str], dict]:
    return {_key(p, depth): json.loads(Path(p).read_text()) for p in paths}


def _plan_row(plan: dict) -> dict[str, Any]:
    if no_plan_reason(plan):
        return {"method": plan["method"], "no_plan": no_plan_reason(plan)}
    predicted, solver, quality = plan.get("predicted") or {}, plan["solver"], plan["quality"]
    bits = [b for s in plan["stages"] for b in s["bits"]]
    return {
        "method": plan["method"],
        "theta": quality.get("theta"),
        "model": plan["model"]["shape"]["name"],
        "stages": len(plan["stages"]),
        "bits": "/".join(str(b) for b in sorted(set(bits), reverse=True)),
        "predicted_tokens_per_s": predicted.get("tokens_per_s"),
        "sum_omega": quality.get("sum_omega"),
        "planning_s": solver.get("seconds"),
        "solver_gap": solver.get("gap"),
    }


def summary_table(
    plans: Sequence[str | Path],
    sims: Sequence[str | Path] = (),
    serves: Sequence[str | Path] = (),
    quality: Sequence[str | Path] = (),
    reference: str | Path | None = None,
) -> pd.DataFrame:
    """One row per plan file (cluster × workload × variant), in the order given; see COLUMNS."""
    sim, served, ppl = _load(sims), _load(serves, depth=1), _load(quality)
    ref = json.loads(Path(reference).read_text())["perplexity"] if reference else None
    rows = []
    for key, plan in _load(plans).items():
        row = dict.fromkeys(COLUMNS) | dict(
            zip(("cluster", "workload", "variant"), key, strict=True)
        )
        row |= _plan_row(plan)
        row["track"] = "execution" if key in served else "planning"
        if key in sim and not no_plan_reason(sim[key]):
            row["simulated_tokens_per_s"] = sim[key]["tokens_per_s"]
        if key in served and not no_plan_reason(served[key]):
            row["served_tokens_per_s"] = served[key]["measured"]["tokens_per_s"]
            if row["predicted_tokens_per_s"]:
                row["served_over_predicted"] = (
                    row["served_tokens_per_s"] / row["predicted_tokens_per_s"]
                )
        if key in ppl and not no_plan_reason(ppl[key]):
            row["perplexity"] = ppl[key]["perplexity"]
            if ref:
                row["ppl_increase_pct"] = 100.0 * (row["perplexity"] / ref - 1.0)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def markdown_table(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown, numbers to 4 significant digits, blanks for missing."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


DATASET_COLUMNS = (
    "track", "cluster", "variant", "prompts", "concurrency", "prompt_len_mean", "prompt_len_p90",
    "prompt_len_max", "generated_tokens", "served_tokens_per_s", "predicted_tokens_per_s",
    "simulated_refill_tokens_per_s", "simulated_one_batch_tokens_per_s", "refill_over_one_batch",
)  # fmt: skip


def dataset_table(
    plans: Sequence[str | Path] = (),
    serves: Sequence[str | Path] = (),
    sims: Sequence[str | Path] = (),
) -> pd.DataFrame:
    """The whole-dataset runs: one row per execution cluster (``plans``: the dataset plan,
    ``serves``: its served metrics, in the same order) and one per planning-track plan simulated
    on the dataset workload (``sims``); see DATASET_COLUMNS."""
    rows = []
    for plan_path, serve_path in zip(plans, serves, strict=True):
        plan, served = (json.loads(Path(p).read_text()) for p in (plan_path, serve_path))
        row = dict.fromkeys(DATASET_COLUMNS) | {"track": "execution",
                                                "cluster": Path(plan_path).parent.name,
                                                "variant": "llmpq"}  # fmt: skip
        if not no_plan_reason(plan) and not no_plan_reason(served):
            lens = served["prompt_lens"]
            row |= {"prompts": served["prompts"], "concurrency": served["concurrency"],
                    "prompt_len_mean": lens.get("mean"), "prompt_len_p90": lens.get("p90"),
                    "prompt_len_max": lens.get("max"),
                    "generated_tokens": served["generated_tokens"],
                    "served_tokens_per_s": served["tokens_per_s"],
                    "predicted_tokens_per_s": plan["dataset"]["predicted"]["tokens_per_s"]}  # fmt: skip
        rows.append(row)
    for key, sim in _load(sims).items():
        row = dict.fromkeys(DATASET_COLUMNS) | {"track": "planning", "cluster": key[0],
                                                "variant": key[2]}  # fmt: skip
        if not no_plan_reason(sim):
            refill, one, lens = sim["refill"], sim["one_batch"], sim["prompt_lens"]
            row |= {"prompts": sim["prompts"], "concurrency": refill["concurrency"],
                    "prompt_len_mean": lens.get("mean"), "prompt_len_p90": lens.get("p90"),
                    "prompt_len_max": lens.get("max"),
                    "generated_tokens": refill["generated_tokens"],
                    "simulated_refill_tokens_per_s": refill["tokens_per_s"],
                    "simulated_one_batch_tokens_per_s": one["tokens_per_s"],
                    "refill_over_one_batch": refill["tokens_per_s"] / one["tokens_per_s"]}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=list(DATASET_COLUMNS))


# ---------------------------------------------------------------------------------- figures
def _throughput(row: pd.Series) -> float | None:
    value = row["served_tokens_per_s"] if row["track"] == "execution" else None
    value = value if value is not None and not pd.isna(value) else row["simulated_tokens_per_s"]
    return None if value is None or pd.isna(value) else float(value)


def _figure(ncols: int, nrows: int = 1, width: float = 6.5, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def _tracks(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [
        (t, table[table.track == t]) for t in ("execution", "planning") if (table.track == t).any()
    ]


def throughput_figure(table: pd.DataFrame):
    """Grouped bars: tokens/s of each variant per cluster (served, else simulated)."""
    tracks = _tracks(table)
    fig, axes = _figure(max(len(tracks), 1), width=7.5)
    for ax, (track, part) in zip(axes, tracks, strict=False):
        clusters, variants = list(dict.fromkeys(part.cluster)), list(dict.fromkeys(part.variant))
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            xs, ys = [], []
            for x, cluster in enumerate(clusters):
                rows = part[(part.cluster == cluster) & (part.variant == variant)]
                value = _throughput(rows.iloc[0]) if len(rows) else None
                if value is not None:
                    xs.append(x - 0.4 + (i + 0.5) * width)
                    ys.append(value)
            ax.bar(xs, ys, width, label=variant)
        ax.set_xticks(range(len(clusters)), clusters, rotation=45, ha="right")
        ax.set_ylabel(
            "generated tokens/s" + (" (served)" if track == "execution" else " (simulated)")
        )
        ax.set_title(f"{track} track")
        if track == "planning":
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def frontier_figure(table: pd.DataFrame):
    """Throughput against quality (perplexity served, else Σω): a marker per plan (its method),
    a colour per cluster, and a line through the llmpq θ/ε sweep (the frontier it traces)."""
    from matplotlib.lines import Line2D

    tracks = _tracks(table)
    fig, axes = _figure(max(len(tracks), 1))
    import matplotlib.pyplot as plt

    markers = dict(zip(("llmpq", "pipeedge", "uniform", "adabits"), "o^sD", strict=True))
    for ax, (track, part) in zip(axes, tracks, strict=False):
        quality = "perplexity" if track == "execution" else "sum_omega"
        handles = []
        for i, (cluster, rows) in enumerate(part.groupby("cluster", sort=False)):
            color = plt.get_cmap("tab20")(i % 20)
            points = [(r[quality], _throughput(r), r["method"]) for _, r in rows.iterrows()]
            points = sorted(p for p in points if p[1] is not None and not pd.isna(p[0]))
            if not points:
                continue
            sweep = [p for p in points if p[2] == "llmpq"]
            ax.plot([p[0] for p in sweep], [p[1] for p in sweep], "-", color=color, alpha=0.6)
            for q, t, method in points:
                ax.plot(q, t, markers.get(method, "x"), color=color, alpha=0.8)
            handles.append(Line2D([], [], color=color, label=cluster))
        handles += [
            Line2D([], [], marker=m, color="0.3", linestyle="", label=name)
            for name, m in markers.items()
        ]
        ax.set_xlabel("perplexity (served weights)" if track == "execution" else "Σω (analytic)")
        ax.set_ylabel("generated tokens/s")
        if track == "planning":
            ax.set_yscale("log")
        ax.set_title(f"{track} track")
        ax.legend(handles=handles, fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def _timeline_source(table, sims, serves):
    """Per cluster, the stage figures of its first llmpq plan (else its first plan)."""
    sim, served = _load(sims), _load(serves, depth=1)
    chosen = []
    for cluster, rows in table[table.no_plan.isna()].groupby("cluster", sort=False):
        rows = rows.sort_values("method", key=lambda m: m != "llmpq", kind="stable")
        key = tuple(rows.iloc[0][["cluster", "workload", "variant"]])
        if key in served:
            m = served[key]
            stages = [(s["device"], 0.0, 0.0, s["busy_s"]) for s in m["stages"]]
            chosen.append((f"{cluster}: {key[2]} (served)", m["measured"]["makespan_s"], stages))
        elif key in sim:
            s = sim[key]
            stages = [
                (x["device"], x["prefill_busy_s"], x["decode_busy_s"], 0.0) for x in s["stages"]
            ]
            chosen.append((f"{cluster}: {key[2]} (simulated)", s["makespan_s"], stages))
    return chosen


def timeline_figure(table: pd.DataFrame, sims=(), serves=()):
    """Each stage's busy time (prefill, decode; or busy when measured as one) and idle time,
    as fractions of the makespan, for one plan per cluster."""
    from matplotlib.patches import Patch

    chosen = _timeline_source(table, sims, serves)
    ncols = min(4, max(len(chosen), 1))
    fig, axes = _figure(ncols, math.ceil(max(len(chosen), 1) / ncols), width=4.5, height=3.0)
    colors = {"prefill": "tab:orange", "decode": "tab:blue", "busy": "tab:green", "idle": "0.85"}
    for ax, (title, makespan_s, stages) in zip(axes, chosen, strict=False):
        for y, (_device, prefill, decode, busy) in enumerate(stages):
            left = 0.0
            idle = max(makespan_s - prefill - decode - busy, 0.0)
            for name, value in (("prefill", prefill), ("decode", decode), ("busy", busy),
                                ("idle", idle)):  # fmt: skip
                if value > 0:
                    ax.barh(y, value / makespan_s, left=left, color=colors[name])
                    left += value / makespan_s
        ax.set_yticks(range(len(stages)), [s[0] for s in stages], fontsize="x-small")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share of the makespan ({makespan_s:.3g} s)")
        ax.set_title(title, fontsize="small")
    for ax in axes[len(chosen) :]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.legend(
        handles=[Patch(color=c, label=n) for n, c in colors.items()],
        loc="upper center", ncol=len(colors), fontsize="small",
    )  # fmt: skip
    return fig


def write_report(
    plans: Sequence[str | Path],
    sims: Sequence[str | Path],
    serves: Sequence[str | Path],
    quality: Sequence[str | Path],
    *,
    reference: str | Path | None,
    outputs: Mapping[str, str | Path],
    dataset: Mapping[str, Sequence[str | Path]] | None = None,
) -> pd.DataFrame:
    """Write the table (``table``: CSV, ``markdown``), the whole-dataset table (``dataset``:
    Markdown, from ``dataset``'s ``dataset_plans``, ``dataset_serves``, ``dataset_sims``) and
    the figures (``throughput``, ``frontier``, ``timeline``: PNG) named in ``outputs``; return
    the table."""
    table = summary_table(plans, sims, serves, quality, reference)
    write_text_atomic(outputs["table"], table.to_csv(index=False))
    write_text_atomic(outputs["markdown"], markdown_table(table))
    if "dataset" in outputs:
        d = dataset or {}
        runs = dataset_table(d.get("dataset_plans", ()), d.get("dataset_serves", ()),
                             d.get("dataset_sims", ()))  # fmt: skip
        write_text_atomic(outputs["dataset"], markdown_table(runs))
    figures = {
        "throughput": lambda: throughput_figure(table),
        "frontier": lambda: frontier_figure(table),
        "timeline": lambda: timeline_figure(table, sims, serves),
    }
    for name, make in figures.items():
        fig = make()
        path = Path(outputs[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return table
