"""Check a plan against a cluster: devices, types, bits, and every stage's memory.

Usage::

    from llmpq.planner.check import check_plan

    check_plan(plan, cluster)      # UserError naming the first thing wrong; None if it holds

The plan's own rules (every layer in exactly one stage, contiguous, one bitwidth per layer,
micro-batches that hold the batch) are checked when it is loaded (:mod:`llmpq.plan`); here
the cluster's: each stage's device exists with the stated type and allows the stage's bits,
no device holds two stages, and each stage fits its device under the exact memory model.
"""

from __future__ import annotations

from llmpq.cluster import Cluster
from llmpq.costmodel.memory import stage_memory
from llmpq.errors import UserError
from llmpq.plan import Plan

GiB = 1024**3


def check_plan(plan: Plan, cluster: Cluster) -> None:
    plan.check_against(cluster)
    n = len(plan.stages)
    for j, stage in enumerate(plan.stages):
        device = cluster.device(stage.device)
        need = stage_memory(
            plan.model_shape, list(stage.bits), plan.memory_workload, plan.micro_batch,
            is_first=j == 0, is_last=j == n - 1, device_type=device.type,
        ).total_bytes  # fmt: skip
        if need > device.memory_bytes:
            raise UserError(
                f"plan.stages[{j}]", f"{device.name} ({stage.layers[1] - stage.layers[0]} layers "
                f"at bits {sorted(set(stage.bits))})",
                "move layers to another stage, lower the bits, or shrink batch_size or the "
                "sequences", problem=f"needs {need / GiB:.3f} GiB but {device.name} has "
                f"{device.memory_bytes / GiB:.3f} GiB",
            )  # fmt: skip
