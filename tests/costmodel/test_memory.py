"""The memory model adds up its parts and matches peaks measured in a real in-process run."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmpq.costmodel.memcheck import measure_stage_memory
from llmpq.costmodel.memory import CUDA_CONTEXT_BYTES, reserve_bytes, stage_memory
from llmpq.devices import device_type
from llmpq.models.spec import model_spec
from llmpq.models.stage import StageRange
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

CPU_SMALL = Workload(8, 64, 32)


def test_parts_add_up() -> None:
    spec = model_spec("opt-13b")
    w, mb = Workload(32, 512, 100), MicroBatch(8, 16, 2)
    bits = [4, 4, 8, 16, 3]
    mem = stage_memory(
        spec, bits, w, mb, is_first=True, is_last=False, device_type=device_type("T4")
    )
    assert mem.weights_bytes == sum(spec.layer_weight_bytes(b) for b in bits)
    assert mem.embedding_bytes == spec.embedding_bytes() and mem.head_bytes == 0
    assert mem.kv_cache_bytes == len(bits) * spec.layer_kv_bytes_per_token() * 32 * 612
    assert mem.prefill_kv_bytes == len(bits) * spec.layer_kv_bytes_per_token() * 32 * 512
    peak = max(
        mem.prefill_kv_bytes + mem.prefill_workspace_bytes,
        mem.kv_cache_bytes + mem.decode_workspace_bytes,
    )
    assert mem.total_bytes == mem.weights_bytes + mem.embedding_bytes + peak + mem.reserve_bytes
    assert mem.reserve_bytes == reserve_bytes(device_type("T4")) > CUDA_CONTEXT_BYTES
    assert mem.to_dict()["total_bytes"] == mem.total_bytes
    overlapped = stage_memory(
        spec, bits, w, mb, is_first=True, is_last=False, device_type=device_type("T4"),
        overlapped_phases=True,
    )  # fmt: skip
    assert overlapped.total_bytes >= mem.total_bytes
    cpu = stage_memory(spec, bits, w, mb, is_first=True, is_last=False)
    assert cpu.reserve_bytes == 0  # a CPU worker's budget counts the model state only


def test_more_work_needs_more_memory() -> None:
    spec = model_spec("llama-2-7b")
    small = stage_memory(
        spec, [4] * 8, CPU_SMALL, MicroBatch(4, 8, 1), is_first=False, is_last=True
    )
    for workload, mb in [
        (Workload(16, 64, 32), MicroBatch(4, 8, 2)),
        (Workload(8, 128, 32), MicroBatch(4, 8, 1)),
        (CPU_SMALL, MicroBatch(8, 8, 1)),
    ]:
        more = stage_memory(spec, [4] * 8, workload, mb, is_first=False, is_last=True)
        assert more.total_bytes > small.total_bytes
    wider = stage_memory(
        spec, [8] * 8, CPU_SMALL, MicroBatch(4, 8, 1), is_first=False, is_last=True
    )
    assert wider.weights_bytes > small.weights_bytes


def test_a_tied_head_on_the_embedding_stage_is_counted_once() -> None:
    spec = model_spec("opt-125m")  # tied LM head
    one = stage_memory(spec, [16] * 12, CPU_SMALL, MicroBatch(8, 8, 1), is_first=True, is_last=True)
    assert one.embedding_bytes + one.head_bytes == spec.weight_bytes(
        16
    ) - 12 * spec.layer_weight_bytes(16)


def _measured_and_predicted(model_dir: Path, layers, bits, workload, micro_batch):
    """The peak of a real in-process run of the stage, and the memory model's breakdown."""
    spec = model_spec(model_dir)
    stage_range = StageRange.of(*layers, spec.num_layers)
    measured = measure_stage_memory(model_dir, stage_range, bits, workload, micro_batch)
    predicted = stage_memory(
        spec, bits[stage_range.start : stage_range.end], workload, micro_batch,
        is_first=stage_range.is_first, is_last=stage_range.is_last,
    )  # fmt: skip
    return measured, predicted


CASES = [  # (layers, bits of the model, workload, micro-batch)
    ((0, 2), [16, 16], CPU_SMALL, MicroBatch(8, 8, 1)),
    ((0, 1), [4, 8], CPU_SMALL, MicroBatch(4, 8, 1)),
    ((1, 2), [4, 3], Workload(4, 128, 16), MicroBatch(2, 2, 2)),
    ((0, 2), [3, 8], Workload(2, 8, 100), MicroBatch(2, 1, 2)),  # decode-bound peak
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_model_matches_a_measured_run_within_5_percent(tiny_llama: Path, case) -> None:
    measured, predicted = _measured_and_predicted(tiny_llama, *case)
    assert predicted.static_bytes == pytest.approx(measured.static_bytes, rel=0.01)
    assert predicted.state_bytes == pytest.approx(measured.peak_bytes, rel=0.05)
    assert predicted.peak_phase == measured.peak_phase


@pytest.mark.slow
def test_default_model_cpu_small_stages_within_5_percent(default_model: Path) -> None:
    mixed = [4, 4, 8, 16, 3, 3]
    for (start, end), mb in [((0, 3), MicroBatch(4, 8, 1)), ((3, 6), MicroBatch(2, 4, 2)),
                             ((0, 6), MicroBatch(8, 8, 1))]:  # fmt: skip
        measured, predicted = _measured_and_predicted(
            default_model, (start, end), mixed, CPU_SMALL, mb
        )
        assert predicted.state_bytes == pytest.approx(measured.peak_bytes, rel=0.05)
