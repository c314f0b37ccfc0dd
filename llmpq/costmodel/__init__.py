"""Cost models: per-layer latency (fitted to measurements, or roofline), memory, communication.

Usage::

    from llmpq.costmodel import CostModel

    cm = CostModel.for_device("T4", spec)       # results/costs/T4/<model>.nc, else roofline
    cm.prefill_layer_ms(4, batch=8, prompt_len=512), cm.decode_layer_ms(4, 8, context=600)
    cm.stage_memory([4, 8], workload, micro_batch, is_first=True, is_last=False).total_bytes

Modules: :mod:`~llmpq.costmodel.tables` (the netCDF cost-table contract),
:mod:`~llmpq.costmodel.latency` (the fitted roofline-shaped form),
:mod:`~llmpq.costmodel.roofline` (tables from datasheet peaks × efficiency factors),
:mod:`~llmpq.costmodel.memory` (per-stage memory) and :mod:`~llmpq.costmodel.memcheck` (its
in-process validation), :mod:`~llmpq.costmodel.comm` (rank-to-rank transfers) and
:mod:`~llmpq.costmodel.model` (``CostModel``). The measurements come from :mod:`llmpq.profiler`.
"""

from llmpq.costmodel.comm import CommFit, link_transfer_ms, measure_comm
from llmpq.costmodel.latency import LatencyModel, PhaseFit
from llmpq.costmodel.memory import StageMemory, stage_memory
from llmpq.costmodel.model import CostModel
from llmpq.costmodel.roofline import (
    DEFAULT_EFFICIENCY,
    EfficiencyFactors,
    calibrate_efficiency,
    roofline_table,
)
from llmpq.costmodel.tables import cost_table_path, load_cost_table, save_cost_table

__all__ = [
    "DEFAULT_EFFICIENCY",
    "CommFit",
    "CostModel",
    "EfficiencyFactors",
    "LatencyModel",
    "PhaseFit",
    "StageMemory",
    "calibrate_efficiency",
    "cost_table_path",
    "link_transfer_ms",
    "load_cost_table",
    "measure_comm",
    "roofline_table",
    "save_cost_table",
    "stage_memory",
]
