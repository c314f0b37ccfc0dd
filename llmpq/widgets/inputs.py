"""The "what if" inputs shared by the plan and Pareto views: cluster, model and workload.

Usage::

    from llmpq.widgets.inputs import ProblemInputs

    inputs = ProblemInputs(devices={"T4": 2, "V100-16G": 2}, model="llama-2-13b")
    inputs = ProblemInputs(cluster="config/clusters/cpu_hetero.yaml",
                           model="results/models/default", workload="config/workloads/cpu_small.yaml")
    inputs.observe(callback)          # called after any control changes
    problem = inputs.problem()        # PlanningProblem (θ = 0), cached per (model, cluster, workload)
    inputs.widget                     # the controls, to put in a layout

Devices come from the catalog with counts (a count of 0 leaves the type out; no device at all is
the cluster's "empty" error) or from a cluster YAML file. The model is a built-in shape name or a
checkpoint directory. Problems are cached because gathering them can take seconds (a
checkpoint's variance indicator, the CPU's measurement); a θ change reuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import ipywidgets as W
import xarray as xr

from llmpq.cluster import Cluster, load_cluster
from llmpq.costmodel.model import DEFAULT_COSTS_DIR
from llmpq.devices import device_type_names
from llmpq.models.spec import NAMED_SHAPES
from llmpq.planner import PlanningProblem, planning_problem
from llmpq.workload import Workload, load_workload

CACHED_PROBLEMS = 8  # problems kept per view (each holds cost models and ω: small)
CATALOG_SOURCE, FILE_SOURCE = "catalog", "file"
DEFAULT_WORKLOAD = Workload(32, 512, 100, name="paper")


def model_choices(models_dir: str | Path = "results/models") -> list[str]:
    """Checkpoint directories under ``models_dir`` first, then the built-in shape names."""
    directory = Path(models_dir)
    found = (
        sorted(str(p.parent) for p in directory.glob("*/config.json")) if directory.is_dir() else []
    )
    return [*found, *NAMED_SHAPES]


def cluster_choices(cluster_dir: str | Path = "config/clusters") -> list[str]:
    directory = Path(cluster_dir)
    return sorted(str(p) for p in directory.glob("*.yaml")) if directory.is_dir() else []


def catalog_cluster(counts: Mapping[str, int], name: str = "catalog") -> Cluster:
    """A one-host cluster of catalog devices; types with a count of 0 are left out."""
    devices = [{"type": t, "count": n} for t, n in counts.items() if n != 0]
    return Cluster.from_dict({"name": name, "devices": devices})


class ProblemInputs:
    """Controls for a cluster, a model and a workload, and the planning problem they describe."""

    def __init__(
        self,
        *,
        devices: Mapping[str, int] | None = None,
        cluster: str | Path | None = None,
        model: str | Path = "opt-6.7b",
        workload: Workload | str | Path = DEFAULT_WORKLOAD,
        costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
        indicator: xr.DataArray | None = None,
        models_dir: str | Path = "results/models",
        cluster_dir: str | Path = "config/clusters",
    ) -> None:
        self.costs_dir, self.indicator = costs_dir, indicator
        self._cache: OrderedDict[tuple, PlanningProblem] = OrderedDict()
        if devices is None:
            devices = {} if cluster else {"T4": 1, "V100-16G": 1}
        counts = dict(devices)
        self.counts = {
            name: W.IntText(value=int(counts.get(name, 0)), description=name,
                            layout=W.Layout(width="150px"), style={"description_width": "70px"})
            for name in device_type_names()
        }  # fmt: skip
        self.cluster_file = W.Combobox(
            value=str(cluster or ""), options=cluster_choices(cluster_dir), ensure_option=False,
            description="cluster file", continuous_update=False, layout=W.Layout(width="420px"),
        )  # fmt: skip
        self.source = W.ToggleButtons(
            options=[("catalog devices", CATALOG_SOURCE), ("cluster file", FILE_SOURCE)],
            value=FILE_SOURCE if cluster else CATALOG_SOURCE,
            style={"button_width": "auto"},
        )
        self.model = W.Combobox(
            value=str(model), options=model_choices(models_dir), ensure_option=False,
            description="model", continuous_update=False, layout=W.Layout(width="420px"),
        )  # fmt: skip
        w = workload if isinstance(workload, Workload) else load_workload(workload)
        self.workload_name = w.name
        self.batch_size = W.IntText(value=w.batch_size, description="batch_size")
        self.prompt_len = W.IntText(value=w.prompt_len, description="prompt_len")
        self.gen_len = W.IntText(value=w.gen_len, description="gen_len")
        self._catalog_box = W.GridBox(
            list(self.counts.values()),
            layout=W.Layout(grid_template_columns="repeat(5, 160px)"),
        )
        self._device_box = W.VBox()
        self.source.observe(lambda _: self._show_source(), names="value")
        self._show_source()
        self.widget = W.VBox([
            self.source, self._device_box, self.model,
            W.HBox([self.batch_size, self.prompt_len, self.gen_len]),
        ])  # fmt: skip

    def _show_source(self) -> None:
        catalog = self.source.value == CATALOG_SOURCE
        self._device_box.children = [self._catalog_box if catalog else self.cluster_file]

    def controls(self) -> list[W.Widget]:
        return [self.source, *self.counts.values(), self.cluster_file, self.model,
                self.batch_size, self.prompt_len, self.gen_len]  # fmt: skip

    def observe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after any control's value changes."""
        for control in self.controls():
            control.observe(lambda _: callback(), names="value")

    # ------------------------------------------------------------------ the problem
    def cluster(self) -> Cluster:
        if self.source.value == FILE_SOURCE:
            return load_cluster(self.cluster_file.value)
        return catalog_cluster({name: box.value for name, box in self.counts.items()})

    def workload(self) -> Workload:
        return Workload(self.batch_size.value, self.prompt_len.value, self.gen_len.value,
                        name=self.workload_name)  # fmt: skip

    def key(self) -> tuple:
        """What the problem depends on (clusters and workloads are frozen, hence hashable)."""
        return (self.model.value.strip(), self.cluster(), self.workload())

    def problem(self) -> PlanningProblem:
        """The problem for the current inputs, with θ = 0 (set a target with ``with_quality``)."""
        key = self.key()
        if key not in self._cache:
            model, cluster, workload = key
            self._cache[key] = planning_problem(
                model, cluster, workload, costs_dir=self.costs_dir, indicator=self.indicator
            )
            while len(self._cache) > CACHED_PROBLEMS:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]
