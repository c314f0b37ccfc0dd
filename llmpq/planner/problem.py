"""A planning problem: model, cluster, workload, per-device costs, ω and the quality target.

Usage::

    from llmpq.planner.problem import planning_problem

    problem = planning_problem("opt-30b", load_cluster("config/clusters/paper_03.yaml"),
                               load_workload("config/workloads/paper.yaml"),
                               theta=1.0)                   # or quality_budget= / ppl_increase_pct=
    problem.omega            # (layers, 4) array, columns in BITS order (3, 4, 8, 16)
    problem.cost(device)     # the CostModel of the device's type (measured table, else roofline)

Everything the planner and the simulator need to price a plan lives here, immutable. Costs come
from ``<costs_dir>/<device type>/<model>.nc`` where a measured table exists, else from the
roofline of the catalog's peaks (:meth:`llmpq.costmodel.CostModel.for_device`). ω comes from an
indicator file, or — without one — the Hessian indicator for a checkpoint (measured better than
the variance one: :func:`default_indicator`) and the analytic one for a shape name. θ is in milliseconds of predicted makespan per unit of Σω.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import xarray as xr

from llmpq.cluster import Cluster, ClusterDevice
from llmpq.costmodel.comm import CommFit
from llmpq.costmodel.model import DEFAULT_COSTS_DIR, CostModel
from llmpq.errors import UserError
from llmpq.models.spec import SUPPORTED_BITS, ModelSpec, model_spec
from llmpq.workload import Workload

BITS = SUPPORTED_BITS  # column order of every per-bit array: (3, 4, 8, 16)


@dataclass(frozen=True, eq=False)
class PlanningProblem:
    """Inputs of one planning run (immutable; ``omega`` is a read-only array)."""

    model_id: str
    spec: ModelSpec
    cluster: Cluster
    workload: Workload
    costs: Mapping[str, CostModel]  # device type name -> cost model
    omega: np.ndarray  # (num_layers, len(BITS)); ω of layer i at BITS[k]
    comm: CommFit | None = None  # measured transfers between devices of one host
    theta: float = 0.0  # ms per unit Σω in the objective
    omega_budget: float | None = None  # hard Σω ≤ budget
    quality_note: dict = field(default_factory=dict)  # how the target was stated
    memory_workload: Workload | None = None  # the shape memory is checked at (None: workload)

    def __post_init__(self) -> None:
        object.__setattr__(self, "costs", MappingProxyType(dict(self.costs)))
        omega = np.array(self.omega, dtype=np.float64)
        omega.setflags(write=False)
        object.__setattr__(self, "omega", omega)
        if omega.shape != (self.spec.num_layers, len(BITS)):
            raise UserError(
                "indicator", f"shape {omega.shape}",
                f"give one ω per layer and bitwidth: ({self.spec.num_layers}, {len(BITS)})",
                "does not match the model",
            )  # fmt: skip
        if not np.isfinite(omega).all() or (omega < 0).any():
            raise UserError("indicator", "ω", "use finite, non-negative values", "is invalid")
        if self.theta < 0 or not np.isfinite(self.theta):
            raise UserError("theta", self.theta, "use a non-negative number (0: speed only)")
        if self.omega_budget is not None and self.omega_budget < 0:
            raise UserError("quality budget", self.omega_budget, "use a non-negative Σω")

    @property
    def memory_shape(self) -> Workload:
        """The workload the memory model is evaluated at: a dataset plan is priced at its mean
        lengths but must fit every slot at the longest context."""
        return self.memory_workload or self.workload

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    def cost(self, device: ClusterDevice) -> CostModel:
        return self.costs[device.type.name]

    def allowed_bits(self, device: ClusterDevice) -> tuple[int, ...]:
        """Bits the device supports and its cost table prices."""
        return tuple(b for b in BITS if b in device.type.bits and b in self.cost(device).bits)

    def sum_omega(self, bits_per_layer) -> float:
        cols = [BITS.index(b) for b in bits_per_layer]
        return float(self.omega[np.arange(len(cols)), cols].sum())

    def with_quality(self, theta: float | None = None, omega_budget: float | None = None):
        """The same problem under another quality target."""
        return PlanningProblem(
            self.model_id, self.spec, self.cluster, self.workload, self.costs, self.omega,
            self.comm, 0.0 if theta is None else theta, omega_budget, dict(self.quality_note),
            self.memory_workload,
        )  # fmt: skip


def omega_matrix(omega: xr.DataArray, spec: ModelSpec) -> np.ndarray:
    """ω as a (layers, BITS) array, checked against the model's layer count."""
    if set(omega.dims) != {"layer", "bits"}:
        raise UserError("indicator", list(omega.dims), "give a DataArray with dims (layer, bits)")
    if omega.sizes["layer"] != spec.num_layers:
        raise UserError(
            "indicator", f"{omega.sizes['layer']} layers",
            f"compute it for {spec.name} ({spec.num_layers} layers)", "is for another model",
        )  # fmt: skip
    missing = [b for b in BITS if b not in omega.bits.values.tolist()]
    if missing:
        raise UserError("indicator bits", missing, f"give ω for every bitwidth in {list(BITS)}")
    return omega.transpose("layer", "bits").sel(bits=list(BITS)).values.astype(np.float64)


def default_indicator(model: str | Path, spec: ModelSpec) -> xr.DataArray:
    """The Hessian (diagonal Fisher) indicator for a checkpoint, the analytic one for a shape
    name. Not the paper's variance indicator: on the default model the Fisher one ranks 40
    random mixed plans by measured perplexity increase with Spearman 0.98 against 0.85, and its
    ε-calibration predicts held-out plans within 17 % against 45 % (bench/indicator_quality.py)."""
    from llmpq import indicator

    if Path(model).is_dir():
        return indicator.compute_indicator(model, "hessian")
    return indicator.analytic_indicator(spec)


def planning_problem(
    model: str | Path | ModelSpec,
    cluster: Cluster,
    workload: Workload,
    *,
    costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
    indicator: xr.DataArray | None = None,
    theta: float | None = None,
    quality_budget: float | None = None,
    ppl_increase_pct: float | None = None,
    comm: CommFit | None = None,
) -> PlanningProblem:
    """Gather costs and ω for ``model`` on ``cluster``; at most one quality target."""
    given = [k for k, v in (("theta", theta), ("quality_budget", quality_budget),
                            ("ppl_increase_pct", ppl_increase_pct)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise UserError("quality target", " and ".join(given), "give only one of them")
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    model_id = spec.name if isinstance(model, ModelSpec) else str(model)
    if indicator is None:
        indicator = default_indicator(model_id, spec)
    omega = omega_matrix(indicator, spec)
    costs = {d.type.name: CostModel.for_device(d.type, spec, costs_dir) for d in cluster.devices}
    note: dict = {"indicator": str(indicator.attrs.get("method", "given"))}
    budget = quality_budget
    if ppl_increase_pct is not None:
        from llmpq.indicator import omega_budget

        budget = omega_budget(indicator, ppl_increase_pct)
        note["ppl_increase_pct"] = ppl_increase_pct
    return PlanningProblem(
        model_id, spec, cluster, workload, costs, omega, comm,
        theta=0.0 if theta is None else float(theta), omega_budget=budget, quality_note=note,
    )  # fmt: skip
