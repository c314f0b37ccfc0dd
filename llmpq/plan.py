"""A plan: which layers each device holds, at which bits, and the micro-batch sizes.

Usage::

    from llmpq.plan import load_plan, save_plan

    plan = load_plan("results/plans/paper-03/paper/llmpq.json")   # validated on the way in
    plan.bits_per_layer()            # [4, 4, 8, ..., 16], one per decoder layer
    plan.check_against(cluster)      # devices exist, types match, bits allowed on each device
    save_plan(plan, "copy.json")     # atomic

Plan JSON (``schema_version`` 1)::

    {"schema_version": 1, "model": {"id": "opt-30b", "shape": {...ModelSpec...}},
     "workload": {"batch_size": 32, "prompt_len": 512, "gen_len": 100},
     "method": "llmpq", "cluster": "paper-03",
     "stages": [{"device": "t4-0", "device_type": "T4", "layers": [0, 10], "bits": [4, ...]}, ...],
     "micro_batch": {"prefill_size": 4, "decode_size": 8, "decode_count": 4},
     "predicted": {"prefill_s": ..., "decode_s": ..., "makespan_s": ..., "tokens_per_s": ...,
                   "peak_memory_bytes": {"t4-0": ...}},
     "solver": {"name": "CBC", "status": "OPTIMAL", "objective": ..., "bound": ..., "gap": ...,
                "seconds": ..., "space": "every ordered subset of the devices"},
     "quality": {"theta": 1.0, "budget": null, "sum_omega": ...},
     "dataset": {"source": "prompts.jsonl", "prompts": 300, "concurrency": 16,
                 "prompt_lens": {"edges": [...], "counts": [...]}, "max_new_tokens": {...},
                 "predicted": {"makespan_s": ..., "tokens_per_s": ..., "generated_tokens": ...},
                 "candidates": [{"concurrency": 8, "makespan_s": ...}, ...]},
     "idle_devices": [{"device": "t4-2", "reason": "every plan that also uses it ..."}]}

Every layer of the model appears in exactly one stage; stages are contiguous and in pipeline
order (a stage may hold no layers). A plan may leave devices of the cluster idle
(``idle_devices`` says which and why; the planner's ``objective`` is the plan's predicted
makespan in ms plus θ·Σω, and ``bound`` a proven lower bound of it over ``space``). ``predicted``, ``solver`` and ``quality`` are optional: a
hand-written plan needs only the model, workload, stages and micro-batch sizes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmpq.cluster import Cluster
from llmpq.errors import UserError
from llmpq.files import write_json_atomic
from llmpq.models.spec import DEFAULT_GROUP_SIZE, SUPPORTED_BITS, ModelSpec
from llmpq.workload import Workload

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """Decoder layers ``[start, end)`` on one device, one bitwidth per layer."""

    device: str
    device_type: str
    layers: tuple[int, int]
    bits: tuple[int, ...]

    @property
    def num_layers(self) -> int:
        return self.layers[1] - self.layers[0]

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "device_type": self.device_type,
                "layers": list(self.layers), "bits": list(self.bits)}  # fmt: skip


@dataclass(frozen=True)
class MicroBatch:
    """Prefill micro-batch size; decode micro-batch size and how many of them circulate."""

    prefill_size: int
    decode_size: int
    decode_count: int


@dataclass(frozen=True)
class Prediction:
    """What the time and memory models predict for the plan."""

    prefill_s: float
    decode_s: float
    makespan_s: float
    tokens_per_s: float
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SolverReport:
    """How the plan was found: solver, status, objective (the plan's predicted makespan in ms,
    plus θ·Σω), a lower bound of it over ``space`` (the plans searched), the relative gap
    between the two, and the planning time."""

    name: str
    status: str
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    seconds: float | None = None
    space: str | None = None


@dataclass(frozen=True)
class IdleDevice:
    """A device of the cluster the plan leaves without layers, and why."""

    device: str
    reason: str


@dataclass(frozen=True)
class DatasetRecord:
    """What a dataset plan was made for (``llmpq plan --prompts`` or a workload of length
    histograms) and what it predicts for the whole dataset: the concurrency the planner chose
    (sequences in flight = ``decode_size × decode_count``), the length distributions as
    histograms (``{"edges": [...], "counts": [...]}``), the predicted makespan of every
    request, and each concurrency it weighed."""

    source: str
    prompts: int
    prompt_lens: dict[str, list]
    max_new_tokens: dict[str, list]
    concurrency: int
    predicted: dict[str, float]  # makespan_s, tokens_per_s, generated_tokens (at the limits)
    memory_shape: dict[str, int]  # the Workload fields memory is checked at (longest context)
    candidates: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class QualityTarget:
    """The quality knob the plan was made under (θ or a budget) and the plan's Σω."""

    theta: float | None = None
    budget: float | None = None
    sum_omega: float | None = None


@dataclass(frozen=True)
class Plan:
    model_id: str
    model_shape: ModelSpec
    workload: Workload
    method: str
    stages: tuple[Stage, ...]
    micro_batch: MicroBatch
    cluster: str = ""
    predicted: Prediction | None = None
    solver: SolverReport | None = None
    quality: QualityTarget | None = None
    idle_devices: tuple[IdleDevice, ...] = ()
    dataset: DatasetRecord | None = None

    def __post_init__(self) -> None:
        _check_stages(self.stages, self.model_shape.num_layers)
        _check_micro_batch(self.micro_batch, self.workload)

    @property
    def memory_workload(self) -> Workload:
        """The shape the plan's memory holds: a dataset plan's every slot at its longest
        context, else the workload."""
        if self.dataset is None:
            return self.workload
        return Workload(**self.dataset.memory_shape)

    def bits_per_layer(self) -> list[int]:
        return [b for stage in self.stages for b in stage.bits]

    def check_against(self, cluster: Cluster) -> None:
        """UserError unless every stage's device is in ``cluster``, of the stated type, and
        allows the stage's bits; a device holds at most one stage."""
        used: set[str] = set()
        for i, stage in enumerate(self.stages):
            device = cluster.device(stage.device)
            if device.type.name != stage.device_type:
                raise UserError(
                    f"plan.stages[{i}].device_type", stage.device_type,
                    f"device {stage.device} of cluster {cluster.name} is a {device.type.name}",
                    "does not match the cluster",
                )  # fmt: skip
            bad = sorted(set(stage.bits) - set(device.type.bits))
            if bad:
                raise UserError(
                    f"plan.stages[{i}].bits", bad[0],
                    f"device {stage.device} allows only {list(device.type.bits)}",
                    "is not allowed on this device",
                )  # fmt: skip
            if stage.device in used:
                raise UserError(
                    f"plan.stages[{i}].device", stage.device, "give each stage its own device",
                    "holds two stages",
                )  # fmt: skip
            used.add(stage.device)

    def _repr_html_(self) -> str:
        """The stages as a table, the prediction and the quality target in the caption."""
        from llmpq.html import html_table, mib, runs

        w, mb = self.workload, self.micro_batch
        caption = (
            f"{self.method} plan of {self.model_id} on {self.cluster or 'a cluster'}; "
            f"workload {w.batch_size}×({w.prompt_len}+{w.gen_len}); micro-batches: prefill "
            f"{mb.prefill_size}, decode {mb.decode_count}×{mb.decode_size}"
        )
        peak = self.predicted.peak_memory_bytes if self.predicted else {}
        if self.predicted:
            caption += (
                f"; predicted {self.predicted.tokens_per_s:.1f} tokens/s, makespan "
                f"{self.predicted.makespan_s:.3g} s"
            )
        if self.quality and self.quality.sum_omega is not None:
            q = self.quality
            target = (f"budget {q.budget:.4g}, " if q.budget is not None
                      else f"θ {q.theta:.4g}, " if q.theta is not None else "")  # fmt: skip
            caption += f"; {target}Σω {q.sum_omega:.4g}"
        if self.solver:
            caption += f"; solver {self.solver.name} {self.solver.status}"
            if self.solver.gap is not None:
                caption += f" (gap {self.solver.gap:.2%})"
        for idle in self.idle_devices:
            caption += f"; {idle.device} idle: {idle.reason}"
        rows = [
            [i, s.device, s.device_type, f"[{s.layers[0]}, {s.layers[1]})", runs(s.bits),
             mib(peak[s.device]) if s.device in peak else "—"]
            for i, s in enumerate(self.stages)
        ]  # fmt: skip
        return html_table(
            ["stage", "device", "type", "layers", "bits", "peak memory"], rows, caption
        )

    def to_dict(self) -> dict[str, Any]:
        optional = {
            name: asdict(value) if value is not None else None
            for name, value in (("predicted", self.predicted), ("solver", self.solver),
                                ("quality", self.quality), ("dataset", self.dataset))
        }  # fmt: skip
        return {
            "schema_version": SCHEMA_VERSION,
            "model": {"id": self.model_id, "shape": self.model_shape.to_dict()},
            "workload": self.workload.to_dict(),
            "method": self.method,
            "cluster": self.cluster,
            "stages": [s.to_dict() for s in self.stages],
            "micro_batch": asdict(self.micro_batch),
            # derived from the shape (not read back): the 3/4-bit group each linear gets
            "quantization": {
                "group_size": DEFAULT_GROUP_SIZE,
                "group_sizes": self.model_shape.group_sizes(DEFAULT_GROUP_SIZE),
            },
            **optional,
            "idle_devices": [asdict(d) for d in self.idle_devices],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(
                "plan.schema_version", version, f"write plans with schema_version {SCHEMA_VERSION}",
                "is not supported",
            )  # fmt: skip
        try:
            model = data["model"]
            return cls(
                model_id=str(model["id"]),
                model_shape=ModelSpec.from_dict(model["shape"]),
                workload=Workload.from_dict(data["workload"]),
                method=str(data["method"]),
                cluster=str(data.get("cluster", "")),
                stages=tuple(_stage_from_dict(i, s) for i, s in enumerate(data["stages"])),
                micro_batch=_record(MicroBatch, data["micro_batch"], "plan.micro_batch"),
                predicted=_optional(Prediction, data.get("predicted"), "plan.predicted"),
                solver=_optional(SolverReport, data.get("solver"), "plan.solver"),
                quality=_optional(QualityTarget, data.get("quality"), "plan.quality"),
                dataset=_optional(DatasetRecord, data.get("dataset"), "plan.dataset"),
                idle_devices=tuple(
                    _record(IdleDevice, d, f"plan.idle_devices[{i}]")
                    for i, d in enumerate(_list(data.get("idle_devices", []), "plan.idle_devices"))
                ),
            )
        except KeyError as missing:
            raise UserError(f"plan.{missing.args[0]}", None, "add it", "is missing") from None
        except (TypeError, AttributeError) as err:
            raise UserError(
                "plan", type(err).__name__, f"fix the plan's structure ({err})"
            ) from None


def _record(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(where, data, "write it as a mapping", "is not a mapping")
    try:
        return cls(**data)
    except TypeError as err:
        raise UserError(where, sorted(data), f"use the fields of {cls.__name__} ({err})") from None


def _list(data: Any, where: str) -> list:
    if not isinstance(data, list):
        raise UserError(where, data, "write it as a list", "is not a list")
    return data


def _optional(cls: type, data: Any, where: str) -> Any:
    return None if data is None else _record(cls, data, where)


def _stage_from_dict(i: int, data: Any) -> Stage:
    where = f"plan.stages[{i}]"
    if not isinstance(data, dict):
        raise UserError(where, data, "write {device, device_type, layers: [start, end), bits}")
    layers = data.get("layers")
    if not (isinstance(layers, list) and len(layers) == 2 and all(type(x) is int for x in layers)):
        raise UserError(f"{where}.layers", layers, "give [start, end) as two integers")
    bits = data.get("bits")
    if not isinstance(bits, list):
        raise UserError(f"{where}.bits", bits, "give one bitwidth per layer")
    return Stage(str(data.get("device", "")), str(data.get("device_type", "")),
                 (layers[0], layers[1]), tuple(bits))  # fmt: skip


def _check_stages(stages: tuple[Stage, ...], num_layers: int) -> None:
    if not stages:
        raise UserError("plan.stages", [], "give at least one stage", "is empty")
    expected_start = 0
    for i, stage in enumerate(stages):
        start, end = stage.layers
        if start != expected_start or end < start:
            raise UserError(
                f"plan.stages[{i}].layers", [start, end],
                f"start at layer {expected_start}: stages are contiguous and in pipeline order",
                "leaves a gap or overlaps",
            )  # fmt: skip
        if len(stage.bits) != end - start:
            raise UserError(
                f"plan.stages[{i}].bits", f"{len(stage.bits)} entries",
                f"give one bitwidth per layer ({end - start} for layers [{start}, {end}))",
                "does not match the layer count",
            )  # fmt: skip
        for b in stage.bits:
            if b not in SUPPORTED_BITS:
                raise UserError(f"plan.stages[{i}].bits", b, f"use {list(SUPPORTED_BITS)}")
        expected_start = end
    if expected_start != num_layers:
        raise UserError(
            "plan.stages", f"layers [0, {expected_start})",
            f"cover all {num_layers} layers of the model", "do not cover the model",
        )  # fmt: skip


def _check_micro_batch(mb: MicroBatch, workload: Workload) -> None:
    for name in ("prefill_size", "decode_size", "decode_count"):
        value = getattr(mb, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"plan.micro_batch.{name}", value, "use a positive integer")
    if mb.decode_size * mb.decode_count < workload.batch_size:
        raise UserError(
            "plan.micro_batch", f"{mb.decode_count} x {mb.decode_size}",
            f"decode micro-batches must hold the batch of {workload.batch_size}",
            "is too small",
        )  # fmt: skip


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan JSON file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("plan file", str(path), "check the path", problem="does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(
            f"plan file {path}", f"line {err.lineno}", "fix the JSON", "is not valid JSON"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"plan file {path}", type(data).__name__, "write a JSON object")
    return Plan.from_dict(data)


def save_plan(plan: Plan, path: str | Path) -> Path:
    return write_json_atomic(path, plan.to_dict())
