"""In-process peak-memory measurement: static bytes, phases, and the CUDA path (GPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmpq.costmodel.memcheck import measure_stage_memory
from llmpq.models.spec import model_spec
from llmpq.models.stage import StageRange
from llmpq.plan import MicroBatch
from llmpq.workload import Workload


def test_static_bytes_are_the_stage_weights_and_kv_shows_in_the_peak(tiny_llama: Path) -> None:
    spec = model_spec(tiny_llama)
    full = StageRange.of(0, 2, 2)
    small = measure_stage_memory(tiny_llama, full, [16, 16], Workload(2, 8, 4), MicroBatch(2, 2, 1))
    expected = 2 * spec.layer_weight_bytes(16) + spec.embedding_bytes() + spec.head_bytes()
    assert small.static_bytes == pytest.approx(expected, rel=0.01)  # + rotary inv_freq
    long = measure_stage_memory(
        tiny_llama, full, [16, 16], Workload(2, 8, 200), MicroBatch(2, 2, 1)
    )
    kv_growth = 2 * spec.layer_kv_bytes_per_token() * 2 * (200 - 4)
    assert long.decode_peak_bytes - small.decode_peak_bytes >= 0.9 * kv_growth
    assert long.peak_phase == "decode" and long.peak_bytes > small.peak_bytes


def test_quantized_layers_shrink_the_static_bytes(tiny_llama: Path) -> None:
    stage = StageRange.of(1, 2, 2)
    workload, mb = Workload(2, 8, 4), MicroBatch(1, 2, 1)
    wide = measure_stage_memory(tiny_llama, stage, [4, 16], workload, mb)
    narrow = measure_stage_memory(tiny_llama, stage, [16, 4], workload, mb)
    assert narrow.static_bytes < wide.static_bytes / 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_is_measured_by_the_allocator(tiny_llama: Path) -> None:
    got = measure_stage_memory(
        tiny_llama, StageRange.of(0, 2, 2), [4, 8], Workload(4, 32, 8), MicroBatch(2, 4, 1),
        device="cuda",
    )  # fmt: skip
    assert got.method == "torch.cuda.max_memory_allocated" and got.reserved_bytes >= got.peak_bytes
