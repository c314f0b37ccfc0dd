"""CostTableExplorer: per-layer latency against batch and sequence length, table points beside
the fitted model's curve.

Usage::

    from llmpq.widgets.cost_tables import CostTableExplorer, cost_table_and_model, cost_figure

    CostTableExplorer(device="cpu", model="results/models/default")   # in a notebook
    table, cm = cost_table_and_model("T4", "opt-13b")      # measured if present, else roofline
    fig = cost_figure(table, cm, bits=4, phase="decode")

The points are the table the planner uses (``results/costs/<type>/<model>.nc`` when it exists:
measured; else the roofline of the catalog's peaks); the curves are
:class:`~llmpq.costmodel.CostModel`'s fitted latency model, the one the planner queries.
Left: latency against batch, one colour per sequence length; right: against sequence length
(prompt length in prefill, cached context in decode), one colour per batch.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from llmpq.costmodel.model import DEFAULT_COSTS_DIR, CostModel
from llmpq.costmodel.roofline import roofline_table
from llmpq.costmodel.tables import PHASES, load_cost_table
from llmpq.devices import device_type, device_type_names
from llmpq.models.spec import model_spec
from llmpq.widgets.drawing import new_figure, run_guarded, show
from llmpq.widgets.inputs import model_choices

CURVES_PER_AXIS = 4  # grid values drawn as separate curves (spread over the grid)
CURVE_POINTS = 64


def cost_table_and_model(
    device: str, model: str | Path, costs_dir: str | Path | None = DEFAULT_COSTS_DIR
) -> tuple[xr.Dataset, CostModel]:
    """The table the planner would price ``model`` on ``device`` with, and its cost model."""
    spec, dtype = model_spec(model), device_type(device)
    cm = CostModel.for_device(dtype, spec, costs_dir)
    if Path(cm.origin).is_file():
        return load_cost_table(cm.origin, spec, dtype.name), cm
    return roofline_table(spec, dtype), cm


def _spread(values: np.ndarray, count: int = CURVES_PER_AXIS) -> list[int]:
    idx = np.unique(np.linspace(0, len(values) - 1, min(count, len(values))).round().astype(int))
    return [int(values[i]) for i in idx]


def cost_figure(table: xr.Dataset, cm: CostModel, bits: int, phase: str) -> Figure:
    """Latency of one decoder layer at ``bits`` in ``phase``: table points and model curves."""
    fig = new_figure(10, 3.4)
    ax_batch, ax_seq = fig.subplots(1, 2)
    layer = table.layer_ms.sel(bits=bits, phase=phase)
    batches, seqs = table.batch.values, table.seq.values
    panels = ((ax_batch, "batch", batches, "seq", _spread(seqs)),
              (ax_seq, "seq", seqs, "batch", _spread(batches)))  # fmt: skip
    for ax, x_dim, x_values, curve_dim, curve_values in panels:
        x_fine = np.geomspace(x_values.min(), x_values.max(), CURVE_POINTS)
        for color, value in zip(("C0", "C1", "C2", "C3"), curve_values, strict=False):
            points = layer.sel({curve_dim: value})
            ax.plot(x_values, points.values, "o", color=color, label=f"{curve_dim}={value}")
            args = {x_dim: x_fine, curve_dim: value}
            ax.plot(x_fine, cm.latency.layer_ms(bits, phase, args["batch"], args["seq"]), "-",
                    color=color, alpha=0.8)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"{x_dim} ({table[x_dim].attrs.get('units', '')})")
        ax.set_ylabel("ms per decoder layer")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{cm.spec.name} on {cm.device_type.name}, {bits}-bit {phase}: points {table.attrs['source']}"
        " (the table), lines the fitted model",
        fontsize=10,
    )
    return fig


class CostTableExplorer:
    """Device type, model, bits and phase controls over :func:`cost_figure`."""

    def __init__(
        self,
        *,
        device: str = "T4",
        model: str | Path = "opt-13b",
        bits: int = 4,
        phase: str = "decode",
        costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
    ) -> None:
        self.costs_dir = costs_dir
        self.device = W.Dropdown(options=device_type_names(), value=device, description="device")
        self.model = W.Combobox(value=str(model), options=model_choices(), ensure_option=False,
                                description="model", continuous_update=False)  # fmt: skip
        self.bits = W.ToggleButtons(options=[3, 4, 8, 16], value=bits, description="bits")
        self.phase = W.ToggleButtons(options=list(PHASES), value=phase, description="phase")
        self.caption = W.HTML()
        self.out = W.Output()
        self.table: xr.Dataset | None = None
        self.cost_model: CostModel | None = None
        self.error: str | None = None
        self._cache: dict[tuple, tuple[xr.Dataset, CostModel]] = {}
        for control in (self.device, self.model, self.bits, self.phase):
            control.observe(lambda _: self.redraw(), names="value")
        self.widget = W.VBox([W.HBox([self.device, self.model]), self.bits, self.phase,
                              self.caption, self.out])  # fmt: skip
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _load(self) -> tuple[xr.Dataset, CostModel]:
        key = (self.device.value, self.model.value.strip())
        if key not in self._cache:
            self._cache = {key: cost_table_and_model(*key, costs_dir=self.costs_dir)}
        return self._cache[key]

    def redraw(self) -> None:
        """Draw for the current controls (never raises: errors are shown)."""
        loaded, self.error = run_guarded(self.out, self._load)
        self.table, self.cost_model = loaded or (None, None)
        if loaded is None:
            self.caption.value = ""
            return
        table, cm = loaded
        if self.bits.value not in cm.bits:
            self.error = (
                f"{cm.device_type.name} has no {self.bits.value}-bit kernels; pick {list(cm.bits)}"
            )
            show(self.out, f"<div class='llmpq-error'>{html.escape(self.error)}</div>")
            return
        self.caption.value = (
            f"{html.escape(cm.spec.name)} on {html.escape(cm.device_type.name)}: "
            f"{html.escape(table.attrs['source'])} table ({html.escape(cm.origin)})"
        )
        show(self.out, cost_figure(table, cm, self.bits.value, self.phase.value))
