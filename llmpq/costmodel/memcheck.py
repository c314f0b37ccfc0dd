"""Measure a stage's peak memory in a real in-process run, to validate the memory model.

Usage::

    from llmpq.costmodel.memcheck import measure_stage_memory

    got = measure_stage_memory("results/models/default", StageRange.of(0, 3, 6), [4, 4, 8, 16, 3, 3],
                               workload, MicroBatch(prefill_size=4, decode_size=8, decode_count=1))
    got.peak_bytes, got.static_bytes, got.peak_phase

The run does what a pipeline stage does: ``load_stage`` at the runtime's 16-bit dtype, RTN
quantization of its layers to the plan's bits, then the prefill of every prefill micro-batch
(each into its own KV cache; the last stage keeps the last position's logits and samples),
the regrouping of the caches into decode micro-batches (layer by layer, so at most one layer's
caches are copied at once), and ``gen_len - 1`` decode steps of every decode micro-batch in
turn. Inputs are what the stage would receive: token ids on the first stage, 16-bit hidden
states elsewhere.

Method. CPU: every tensor allocation and free inside the run is recorded by
``torch.profiler`` (``profile_memory=True``); the peak of their running sum is the dynamic peak,
added to the bytes of the stage's parameters and buffers (allocated before). One thread is used
so that no allocation happens on a worker thread the profiler does not watch. This counts the
model state (weights, KV cache, activations and the kernels' workspaces), not the Python/torch
runtime. CUDA: ``torch.cuda.max_memory_allocated`` over the run (the caching allocator's
reserve is reported apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmpq.errors import UserError
from llmpq.models.stage import PipelineStage, StageRange, StepInputs, load_stage
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

DECODE_MARK = "llmpq.memcheck.decode"


@dataclass(frozen=True)
class MeasuredMemory:
    """Peak bytes of a stage's run; ``peak_bytes`` = static + dynamic peak."""

    static_bytes: int  # parameters and buffers of the (quantized) stage
    prefill_peak_bytes: int  # dynamic peak while prefilling
    decode_peak_bytes: int  # dynamic peak while decoding
    reserved_bytes: int | None = None  # CUDA: the caching allocator's peak reserve
    method: str = "torch.profiler allocation events (CPU)"

    @property
    def peak_bytes(self) -> int:
        return self.static_bytes + max(self.prefill_peak_bytes, self.decode_peak_bytes)

    @property
    def peak_phase(self) -> str:
        return "prefill" if self.prefill_peak_bytes > self.decode_peak_bytes else "decode"


def _module_bytes(stage: PipelineStage) -> int:
    seen, total = set(), 0
    for t in [*stage.parameters(), *stage.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:  # a tied head shares the embedding's storage
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _sizes(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


@dataclass(frozen=True, eq=False)
class _StageRun:
    stage: PipelineStage
    workload: Workload
    micro_batch: MicroBatch

    def _input(self, batch: int, q: int) -> torch.Tensor:
        stage, device = self.stage, self.stage.device
        if stage.stage_range.is_first:
            return torch.randint(3, stage.config.vocab_size, (batch, q), device=device)
        dtype = next(stage.parameters()).dtype
        return torch.randn(batch, q, stage.config.hidden_size, dtype=dtype, device=device)

    def _step(self, x: torch.Tensor, step: StepInputs, cache) -> None:
        out = self.stage(x, step, cache, logits_to_keep=1)  # [b, q, H] or logits [b, 1, V]
        if self.stage.stage_range.is_last:
            out[:, -1].float().argmax(-1)  # what sampling does

    def prefill(self) -> list:
        """Prefill every micro-batch; the caches, one per prefill micro-batch."""
        w, caches = self.workload, []
        for size in _sizes(w.batch_size, self.micro_batch.prefill_size):
            mask = torch.ones(size, w.prompt_len, dtype=torch.long, device=self.stage.device)
            mask[0, 0] = 0  # left padding, as in real prompts
            cache = self.stage.new_cache()
            self._step(
                self._input(size, w.prompt_len), StepInputs.from_mask(mask, w.prompt_len), cache
            )
            caches.append(cache)
        return caches

    def regroup(self, caches: list) -> list:
        """Decode-sized caches from the prefill ones, one layer at a time."""
        w = self.workload
        sizes = _sizes(w.batch_size, self.micro_batch.decode_size)
        if not self.stage.layers:
            return [self.stage.new_cache() for _ in sizes]
        if sizes == _sizes(w.batch_size, self.micro_batch.prefill_size):
            return caches
        out = [self.stage.new_cache() for _ in sizes]
        for i in self.stage.stage_range.layer_ids:
            keys = torch.cat([c.layers[i].keys for c in caches])  # [B, kv_heads, s, d]
            values = torch.cat([c.layers[i].values for c in caches])
            for c in caches:
                c.layers[i].keys = c.layers[i].values = None
            start = 0
            for size, cache in zip(sizes, out, strict=True):
                part = slice(start, start + size)
                cache.update(keys[part], values[part], i)  # update copies
                start += size
            del keys, values
        return out

    def decode(self, caches: list) -> None:
        w = self.workload
        sizes = _sizes(w.batch_size, self.micro_batch.decode_size)
        steps = []
        for size in sizes:
            mask = torch.ones(size, w.prompt_len, dtype=torch.long, device=self.stage.device)
            mask[0, 0] = 0
            steps.append(StepInputs.from_mask(mask, w.prompt_len))
        for _ in range(w.gen_len - 1):
            for j, (size, cache) in enumerate(zip(sizes, caches, strict=True)):
                steps[j] = steps[j].next()
                self._step(self._input(size, 1), steps[j], cache)


def _dynamic_peaks(prof) -> tuple[int, int]:
    """(prefill, decode) peaks of the running sum of allocations, split at the decode mark."""
    events = prof.profiler.kineto_results.events()
    marks = [e.start_ns() for e in events if e.name() == DECODE_MARK]
    split = marks[0] if marks else float("inf")
    memory = sorted(
        (e.start_ns(), i, e.nbytes()) for i, e in enumerate(events) if e.name() == "[memory]"
    )
    current, peaks = 0, [0, 0]
    for start, _, nbytes in memory:
        current += nbytes
        phase = int(start >= split)
        peaks[phase] = max(peaks[phase], current)
    return peaks[0], peaks[1]


def _run(run: _StageRun) -> None:
    caches = run.regroup(run.prefill())
    with torch.profiler.record_function(DECODE_MARK):
        run.decode(caches)


@torch.no_grad()
def measure_stage_memory(
    model_dir: str | Path,
    stage_range: StageRange,
    bits_per_layer: Sequence[int],
    workload: Workload,
    micro_batch: MicroBatch,
    device: str = "cpu",
    group_size: int = 128,
) -> MeasuredMemory:
    """Run the stage for ``workload`` and measure its peak (``bits_per_layer``: the whole model)."""
    from llmpq.quant import quantize_stage, sixteen_bit_dtype

    dev = torch.device(device)
    stage = load_stage(model_dir, stage_range, sixteen_bit_dtype(dev), dev)
    if any(b != 16 for b in bits_per_layer[stage_range.start : stage_range.end]):
        quantize_stage(stage, list(bits_per_layer), group_size)
    run = _StageRun(stage, workload, micro_batch)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device", device, "use cpu: this machine has no CUDA GPU")
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        caches = run.regroup(run.prefill())
        torch.cuda.synchronize(dev)
        prefill = torch.cuda.max_memory_allocated(dev) - base
        torch.cuda.reset_peak_memory_stats(dev)
        run.decode(caches)
        torch.cuda.synchronize(dev)
        decode = torch.cuda.max_memory_allocated(dev) - base
        return MeasuredMemory(
            base, prefill, decode, torch.cuda.max_memory_reserved(dev),
            method="torch.cuda.max_memory_allocated",
        )  # fmt: skip
    static = _module_bytes(stage)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
            _run(run)
    finally:
        torch.set_num_threads(threads)
    prefill, decode = _dynamic_peaks(prof)
    return MeasuredMemory(static, prefill, decode)
