"""A stage's memory need (the memory model) against its device's budget, before anything loads.

Usage::

    from llmpq.runtime.budget import check_stage_budget

    mem = check_stage_budget(plan, 1, spec, workload, budget_bytes=4 << 20)   # StageMemory
    # over budget: UserError "stage 1 (cpu-small, layers [3, 6)) = 'needs 9.3 MiB' does not
    # fit its budget of 4.0 MiB; ..."

The need is :func:`llmpq.costmodel.memory.stage_memory` for the stage's layers and bits, the
batch actually served (its prompt length after padding) and the plan's micro-batches; the budget
is the cluster device's memory (a CPU worker's ``memory_MiB`` counts model state only).
"""

from __future__ import annotations

from llmpq.costmodel.memory import MiB, StageMemory, stage_memory
from llmpq.devices import DeviceType
from llmpq.errors import UserError
from llmpq.models.spec import ModelSpec
from llmpq.plan import Plan
from llmpq.workload import Workload


def stage_need(
    plan: Plan, index: int, spec: ModelSpec, workload: Workload,
    device_type: DeviceType | None = None,
) -> StageMemory:  # fmt: skip
    """The memory model's figure for stage ``index`` of ``plan`` serving ``workload``."""
    stage = plan.stages[index]
    return stage_memory(
        spec, stage.bits, workload, plan.micro_batch,
        is_first=index == 0, is_last=index == len(plan.stages) - 1, device_type=device_type,
    )  # fmt: skip


def check_stage_budget(
    plan: Plan, index: int, spec: ModelSpec, workload: Workload, budget_bytes: int | None,
    device_type: DeviceType | None = None,
) -> StageMemory:  # fmt: skip
    """The stage's need; UserError naming the stage, the need and the budget if over budget."""
    need = stage_need(plan, index, spec, workload, device_type)
    if budget_bytes is not None and need.total_bytes > budget_bytes:
        stage = plan.stages[index]
        raise UserError(
            f"stage {index} ({stage.device}, layers [{stage.layers[0]}, {stage.layers[1]}), "
            f"bits {sorted(set(stage.bits))})",
            f"needs {need.total_bytes / MiB:.1f} MiB",
            f"give {stage.device} more memory in the cluster file, or plan fewer or lower-bit "
            f"layers there (peak in {need.peak_phase}: weights {need.static_bytes / MiB:.1f} "
            f"MiB, KV cache {need.kv_cache_bytes / MiB:.1f} MiB)",
            problem=f"does not fit its budget of {budget_bytes / MiB:.1f} MiB",
        )
    return need
