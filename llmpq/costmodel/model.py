"""``CostModel``: everything the planner asks about one device type and one model shape.

Usage::

    from llmpq.costmodel import CostModel

    cm = CostModel.for_device("T4", spec)                 # results/costs/T4/<model>.nc, else roofline
    cm = CostModel.load("results/costs/cpu/default.nc", spec=spec)     # a given table
    cm.prefill_layer_ms(4, batch=8, prompt_len=64)         # ms per decoder layer at 4 bits
    cm.decode_layer_ms(4, batch=8, context=[64, 65])       # numpy in, numpy out
    cm.decode_steps_ms(4, batch=8, context=64, steps=31)   # Σ over a growing context, O(1)
    cm.prepost_ms("decode", batch=8, seq=64)               # embeddings + head (pipeline ends)
    cm.stage_overhead_ms("prefill", batch=8, seq=64)       # per stage, besides its layers
    mem = cm.stage_memory([4, 4, 8], workload, micro_batch, is_first=True, is_last=False)
    mem.total_bytes <= cm.memory_bytes

Latencies come from :class:`~llmpq.costmodel.latency.LatencyModel` fitted to the table
(measured, or roofline for catalog GPUs nobody here has); memory from
:func:`~llmpq.costmodel.memory.stage_memory` with the device's reserve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from llmpq.costmodel.latency import LatencyModel
from llmpq.costmodel.memory import StageMemory, stage_memory
from llmpq.costmodel.roofline import DEFAULT_EFFICIENCY, EfficiencyFactors, roofline_table
from llmpq.costmodel.tables import cost_table_path, load_cost_table, table_spec
from llmpq.devices import DeviceType
from llmpq.devices import device_type as lookup_device_type
from llmpq.models.spec import ModelSpec
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

DEFAULT_COSTS_DIR = Path("results/costs")


@dataclass(frozen=True)
class CostModel:
    """Latency and memory of one model shape on one device type (immutable, cheap to query)."""

    device_type: DeviceType
    spec: ModelSpec
    latency: LatencyModel
    source: str  # measured | roofline | fitted: the table's provenance
    origin: str  # the table's path, or how it was built

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_table(
        cls, table: xr.Dataset, device_type: DeviceType | None = None, origin: str = ""
    ) -> CostModel:
        dtype = device_type or lookup_device_type(table.attrs["device_type"])
        return cls(
            dtype, table_spec(table), LatencyModel.from_table(table), table.attrs["source"],
            origin or "in memory",
        )  # fmt: skip

    @classmethod
    def load(
        cls, path: str | Path, spec: ModelSpec | None = None,
        device_type: DeviceType | str | None = None,
    ) -> CostModel:  # fmt: skip
        """From a table file, checked against ``spec`` and ``device_type`` when given."""
        dtype = _resolve(device_type)
        table = load_cost_table(path, spec, dtype.name if dtype else None)
        model = cls.from_table(table, dtype, origin=str(path))
        return model if spec is None else _renamed(model, spec)

    @classmethod
    def for_device(
        cls,
        device_type: DeviceType | str,
        spec: ModelSpec,
        costs_dir: str | Path | None = DEFAULT_COSTS_DIR,
        efficiency: EfficiencyFactors = DEFAULT_EFFICIENCY,
    ) -> CostModel:
        """The table at ``<costs_dir>/<type>/<model>.nc`` if there is one (a measured table
        overrides the roofline), else a roofline table built from the type's peaks."""
        dtype = _resolve(device_type)
        if costs_dir is not None:
            path = cost_table_path(costs_dir, dtype.name, spec.name)
            if path.is_file():
                return cls.load(path, spec, dtype)
        table = roofline_table(spec, dtype, efficiency)
        return cls.from_table(table, dtype, origin=f"roofline of {dtype.name} datasheet peaks")

    # ------------------------------------------------------------------ latency (ms)
    @property
    def bits(self) -> tuple[int, ...]:
        """Bitwidths with latencies (those the device type allows)."""
        return tuple(b for b in self.latency.bits if b in self.device_type.bits)

    def prefill_layer_ms(self, bits: int, batch, prompt_len) -> float | np.ndarray:
        """One decoder layer at ``bits`` prefilling ``batch`` prompts of ``prompt_len`` tokens."""
        return self.latency.layer_ms(bits, "prefill", batch, prompt_len)

    def decode_layer_ms(self, bits: int, batch, context) -> float | np.ndarray:
        """One decoder layer at ``bits`` decoding one token for ``batch`` sequences that have
        ``context`` tokens cached."""
        return self.latency.layer_ms(bits, "decode", batch, context)

    def decode_steps_ms(self, bits: int, batch, context, steps: int) -> float | np.ndarray:
        """Σ of :meth:`decode_layer_ms` over ``steps`` steps from ``context`` cached tokens."""
        return self.latency.decode_steps_ms(bits, batch, context, steps)

    def embed_ms(self, phase: str, batch, seq) -> float | np.ndarray:
        return self.latency.part_ms("embed", phase, batch, seq)

    def head_ms(self, phase: str, batch, seq) -> float | np.ndarray:
        return self.latency.part_ms("head", phase, batch, seq)

    def prepost_ms(self, phase: str, batch, seq) -> float | np.ndarray:
        """Embeddings (first stage) + final norm and LM head (last stage)."""
        return self.embed_ms(phase, batch, seq) + self.head_ms(phase, batch, seq)

    def stage_overhead_ms(self, phase: str, batch, seq) -> float | np.ndarray:
        """What every stage pays once per step besides its layers (masks, position tables)."""
        return self.latency.part_ms("stage", phase, batch, seq)

    # ------------------------------------------------------------------ display
    def _repr_html_(self) -> str:
        """Per-layer latency at a few shapes, one row per bitwidth (a bare notebook cell)."""
        from llmpq.html import html_table, mib

        seq = min(512, self.spec.max_positions)
        points = [("prefill", 1, seq), ("prefill", 8, seq), ("decode", 1, seq), ("decode", 32, seq)]
        headers = ["bits", "weights/layer"] + [f"{p} b={b} s={s} (ms)" for p, b, s in points]
        rows = [
            [bits, mib(self.spec.layer_weight_bytes(bits))]
            + [f"{float(self.latency.layer_ms(bits, p, b, s)):.4g}" for p, b, s in points]
            for bits in self.bits
        ]
        caption = (
            f"cost model: {self.spec.name} on {self.device_type.name} ({self.source}; "
            f"{self.origin}); ms per decoder layer; s = prompt length (prefill) or context (decode)"
        )
        return html_table(headers, rows, caption)

    # ------------------------------------------------------------------ memory (bytes)
    @property
    def memory_bytes(self) -> int:
        """The device's memory: a stage fits if its ``total_bytes`` is at most this."""
        return self.device_type.memory_bytes

    def stage_memory(
        self, bits: Sequence[int], workload: Workload, micro_batch: MicroBatch, *,
        is_first: bool, is_last: bool, overlapped_phases: bool = False,
    ) -> StageMemory:  # fmt: skip
        """Memory of a stage holding ``len(bits)`` layers at ``bits`` (see the memory model)."""
        return stage_memory(
            self.spec, bits, workload, micro_batch, is_first=is_first, is_last=is_last,
            device_type=self.device_type, overlapped_phases=overlapped_phases,
        )  # fmt: skip


def _resolve(device_type: DeviceType | str | None) -> DeviceType | None:
    if device_type is None or isinstance(device_type, DeviceType):
        return device_type
    return lookup_device_type(device_type)


def _renamed(model: CostModel, spec: ModelSpec) -> CostModel:
    """The caller's spec (same shape, maybe another name) in the model."""
    latency = LatencyModel(spec, model.latency.layer_fits, model.latency.part_fits)
    return CostModel(model.device_type, spec, latency, model.source, model.origin)
