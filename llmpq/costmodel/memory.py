"""The memory model: what one pipeline stage needs, from the model shape, bits and micro-batches.

Usage::

    from llmpq.costmodel.memory import stage_memory

    mem = stage_memory(spec, bits=[4, 4, 8], workload=w, micro_batch=plan.micro_batch,
                       is_first=True, is_last=False, device_type=device_type("T4"))
    mem.total_bytes, mem.state_bytes, mem.peak_phase      # breakdown: mem.weights_bytes, ...

What is counted (all bytes; activations and KV in the 16-bit runtime dtype):

* ``weights_bytes``: the stage's decoder layers at their bits, scales and zeros included
  (:meth:`ModelSpec.layer_weight_bytes`); ``embedding_bytes`` on the first stage and
  ``head_bytes`` on the last (a tied head on the same stage as the embedding is counted once).
* ``kv_cache_bytes``: K and V of the stage's layers for every sequence of the batch at the full
  context (prompt + generation): every decode micro-batch in flight keeps its cache on every
  stage. ``prefill_kv_bytes``: the same at the prompt length, while prefill runs.
* ``prefill_workspace_bytes`` / ``decode_workspace_bytes``: the live temporaries at the peak of
  one prefill micro-batch (``prefill_size`` × prompt) and of one decode micro-batch
  (``decode_size`` sequences at the full context), counted from how the HF layers compute (the
  tensor counts were read off allocation traces, ``MLP_WIDTHS``): the widest point of the MLP
  (LLaMA: 3 ffn-sized tensors; OPT: 2; BLOOM's tanh-GELU: 5) or of attention (BLOOM with its
  explicit scores and fp32 softmax), with the layer input, residual and normed input alive; the
  4-D mask (batch·q·ctx bytes; BLOOM's is 16-bit) and rotary tables; the stage's input held by
  the caller (ids on the first stage, hidden states elsewhere); the logits of the last position
  on the last stage (16-bit, and the fp32 copy sampling makes); in decode, the copy
  ``torch.cat`` makes while appending one layer's K or V, or the quantized kernels' per-call
  transient (3-bit weights are unpacked per call), whichever is larger; and the 2-D masks of
  every micro-batch.
* ``reserve_bytes``: on CUDA the context (430 MiB, LLM-PQ's ``CUDA_CONTEXT_MEM``) and allocator
  slack (5% of the device, LLM-PQ's ``RATIO_AVOID_OOM`` = 0.95); on a CPU worker 0: its budget
  counts the model state (weights, KV, activations), not the Python/torch runtime.

Peak: ``weights + embedding + head + reserve + max(prefill_kv + prefill_workspace, kv_cache +
decode_workspace)``, assuming a stage runs the prefill of all its micro-batches before decoding
(LLM-PQ's schedule). With ``overlapped_phases=True`` (a runtime that starts decoding while later
micro-batches prefill) the bound is ``kv_cache + max(both workspaces)``.

Validated against peaks measured in-process by :mod:`llmpq.costmodel.memcheck`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType

from llmpq.devices import DeviceType
from llmpq.models.spec import (
    BYTES_16BIT,
    CHUNK_BYTES_3BIT,  # the 3-bit CPU path's row chunk
    DEFAULT_GROUP_SIZE,
    ModelSpec,
    check_bits,
)
from llmpq.plan import MicroBatch
from llmpq.workload import Workload

MiB = 1024**2
CUDA_CONTEXT_BYTES = 430 * MiB  # LLM-PQ _globals.CUDA_CONTEXT_MEM (spec Appendix A)
CUDA_SLACK_FRACTION = 0.05  # LLM-PQ RATIO_AVOID_OOM = 0.95 of the device
IDS_BYTES = 8  # int64 token ids and 2-D attention masks
FP32_BYTES = 4


@dataclass(frozen=True)
class StageMemory:
    """Bytes one stage needs, by part; ``total_bytes`` is what must fit on the device."""

    weights_bytes: int
    embedding_bytes: int
    head_bytes: int
    kv_cache_bytes: int  # full context, every micro-batch
    prefill_kv_bytes: int  # prompt only, every micro-batch
    prefill_workspace_bytes: int
    decode_workspace_bytes: int
    reserve_bytes: int
    overlapped_phases: bool = False

    @property
    def prefill_peak_bytes(self) -> int:
        kv = self.kv_cache_bytes if self.overlapped_phases else self.prefill_kv_bytes
        return kv + self.prefill_workspace_bytes

    @property
    def decode_peak_bytes(self) -> int:
        return self.kv_cache_bytes + self.decode_workspace_bytes

    @property
    def peak_phase(self) -> str:
        return "prefill" if self.prefill_peak_bytes > self.decode_peak_bytes else "decode"

    @property
    def static_bytes(self) -> int:
        return self.weights_bytes + self.embedding_bytes + self.head_bytes

    @property
    def state_bytes(self) -> int:
        """Model state at the peak: weights, KV and activations (no reserve)."""
        return self.static_bytes + max(self.prefill_peak_bytes, self.decode_peak_bytes)

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.reserve_bytes

    def to_dict(self) -> dict:
        return asdict(self) | {"total_bytes": self.total_bytes, "peak_phase": self.peak_phase}


def reserve_bytes(device_type: DeviceType | None) -> int:
    """Framework reserve of a device: CUDA context + allocator slack; 0 for a CPU worker."""
    if device_type is None or not device_type.is_gpu:
        return 0
    return CUDA_CONTEXT_BYTES + int(CUDA_SLACK_FRACTION * device_type.memory_bytes)


# Tensors alive at the widest point of the MLP, per token, as (ffn-sized, hidden-sized) counts,
# read off traces of the HF layers (llmpq.costmodel.memcheck): LLaMA's gated MLP holds act(gate),
# up and their product with the layer input, residual and normed input; OPT holds fc1's output
# and its bias-added copy (quantized linears add the bias out of place, while the normed input is
# still held) or the ReLU output, with two hidden-sized tensors (three with quantized fc1); BLOOM's tanh-GELU makes three temporaries besides the
# dense_h_to_4h output and 1 + tanh(...), with fp32 layer-norm leftovers.
MLP_WIDTHS = MappingProxyType({"llama": (3, 3), "opt": (2, 2), "bloom": (5, 5)})
MASK_BYTES = MappingProxyType({"llama": 1, "opt": 1, "bloom": 2})  # per (query, key): bool; bf16
BLOOM_SCORE_BYTES = 2 + 2 + 4 + 4  # per (head, query, key): baddbmm, + mask, fp32 softmax, copy


def _mlp_elems_per_token(spec: ModelSpec, quantized: bool) -> int:
    """Elements alive at the widest point of the MLP, per token."""
    ffn_sized, hidden_sized = MLP_WIDTHS[spec.family]
    if spec.family == "opt" and quantized and spec.mlp_bias:
        hidden_sized += 1  # the normed input, still held while fc1's bias is added
    return ffn_sized * spec.ffn_dim + hidden_sized * spec.hidden_size


def _attention_elems_per_token(spec: ModelSpec) -> int:
    """Elements alive at the widest point of attention besides the scores: the three
    hidden-sized tensors, and q, k, v (BLOOM: fused), with LLaMA/OPT's rotated or scaled q
    copies and the attention output before and after the transpose."""
    if spec.family == "bloom":
        return 3 * spec.hidden_size + 3 * spec.hidden_size
    hq, hkv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    return 3 * spec.hidden_size + 5 * hq + 2 * hkv


def _layer_peak_bytes(spec: ModelSpec, bits: Sequence[int], batch: int, q: int, ctx: int) -> int:
    """Live activations at a layer's widest point for ``batch`` × ``q`` new tokens against
    ``ctx`` keys: the MLP or attention (BLOOM: with its explicit scores), plus the 4-D mask and
    (LLaMA) the rotary cos/sin tables, which live through the whole stage."""
    n = batch * q
    mlp = n * _mlp_elems_per_token(spec, any(b != 16 for b in bits)) * BYTES_16BIT
    attention = n * _attention_elems_per_token(spec) * BYTES_16BIT
    if spec.family == "bloom":
        attention += batch * spec.num_heads * q * ctx * BLOOM_SCORE_BYTES
    rotary = 2 * n * spec.head_dim * BYTES_16BIT if spec.family == "llama" else 0
    return max(mlp, attention) + batch * q * ctx * MASK_BYTES[spec.family] + rotary


def quant_transient_bytes(
    spec: ModelSpec, bits: Sequence[int], on_gpu: bool, group_size: int = DEFAULT_GROUP_SIZE
) -> int:
    """The largest per-call temporary of the stage's quantized linears.

    CPU: 3-bit unpacks one row chunk of int4 bytes per call (output and top-bit planes, 1.75×
    the chunk); 4/8-bit kernels read their weights as stored. CUDA: 3-bit dequantizes the whole
    weight (codes, fp32 grid, 16-bit copy: ~7 bytes per weight); 8-bit, where the build lacks
    the int8 kernel, casts the weight to 16 bits (2 bytes per weight); 4-bit uses its kernel.
    """
    worst = 0
    for b in set(bits):
        check_bits(b)
        for lin in spec.layer_linears():
            n, k = lin.out_features, lin.in_features
            if b == 3 and not on_gpu:
                rows = max(16, (CHUNK_BYTES_3BIT // (k // 2)) // 16 * 16)
                worst = max(worst, math.ceil(1.75 * min(n, rows) * k / 2))
            elif b == 3:
                worst = max(worst, 7 * n * k)
            elif b == 8 and on_gpu:
                worst = max(worst, 2 * n * k)
    return worst


def _held_input_bytes(spec: ModelSpec, tokens: int, is_first: bool, num_layers: int) -> int:
    """The stage's input, held by the caller for the whole step: ids, or received hidden states
    (which, on a one-layer stage, are the layer input already counted)."""
    if is_first:
        return tokens * IDS_BYTES
    return tokens * spec.hidden_size * BYTES_16BIT if num_layers != 1 else 0


def _head_peak_bytes(spec: ModelSpec, batch: int, tokens: int) -> int:
    """Last stage, after its layers: the final hidden states and the last position's logits
    (16-bit, and the fp32 copy sampling makes)."""
    return tokens * spec.hidden_size * BYTES_16BIT + batch * spec.vocab_size * (
        BYTES_16BIT + FP32_BYTES
    )


def prefill_workspace_bytes(
    spec: ModelSpec, bits: Sequence[int], batch: int, prompt_len: int, *, is_first: bool,
    is_last: bool, on_gpu: bool = False, group_size: int = DEFAULT_GROUP_SIZE,
) -> int:  # fmt: skip
    """Live temporaries at the peak of one prefill micro-batch on a stage."""
    n = batch * prompt_len
    peak = 0
    if bits:
        # the widest point, or a quantized kernel's transient with the three hidden-sized tensors
        unpack = quant_transient_bytes(spec, bits, on_gpu, group_size)
        peak = max(
            _layer_peak_bytes(spec, bits, batch, prompt_len, prompt_len),
            unpack + 3 * n * spec.hidden_size * BYTES_16BIT,
        )
    elif is_first:
        peak = n * spec.hidden_size * BYTES_16BIT  # the embeddings' output
    if is_last:
        peak = max(peak, _head_peak_bytes(spec, batch, n))
    return peak + _held_input_bytes(spec, n, is_first, len(bits))


def decode_workspace_bytes(
    spec: ModelSpec, bits: Sequence[int], batch: int, context: int, *, is_first: bool,
    is_last: bool, on_gpu: bool = False, group_size: int = DEFAULT_GROUP_SIZE,
) -> int:  # fmt: skip
    """Live temporaries at the peak of one decode step of a micro-batch at ``context`` tokens."""
    peak = 0
    if bits:
        kv_append = batch * context * spec.layer_kv_bytes_per_token() // 2  # one of K or V
        transient = max(kv_append, quant_transient_bytes(spec, bits, on_gpu, group_size))
        peak = _layer_peak_bytes(spec, bits, batch, 1, context) + transient
    elif is_first:
        peak = batch * spec.hidden_size * BYTES_16BIT
    if is_last:
        peak = max(peak, _head_peak_bytes(spec, batch, batch))
    return peak + _held_input_bytes(spec, batch, is_first, len(bits))


def stage_memory(
    spec: ModelSpec,
    bits: Sequence[int],
    workload: Workload,
    micro_batch: MicroBatch,
    *,
    is_first: bool,
    is_last: bool,
    device_type: DeviceType | None = None,
    overlapped_phases: bool = False,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> StageMemory:
    """The memory of a stage holding ``len(bits)`` decoder layers at ``bits`` (in order)."""
    on_gpu = device_type is not None and device_type.is_gpu
    context = workload.prompt_len + workload.gen_len
    layer_kv = spec.layer_kv_bytes_per_token() * len(bits)
    head = spec.head_bytes() if is_last else 0
    if is_first and is_last and spec.tie_word_embeddings:
        head -= spec.vocab_size * spec.embed_dim * BYTES_16BIT  # one shared tensor
    masks = workload.batch_size * context * IDS_BYTES  # every micro-batch's 2-D mask
    return StageMemory(
        weights_bytes=sum(spec.layer_weight_bytes(b, group_size) for b in bits),
        embedding_bytes=spec.embedding_bytes() if is_first else 0,
        head_bytes=head,
        kv_cache_bytes=layer_kv * workload.batch_size * context,
        prefill_kv_bytes=layer_kv * workload.batch_size * workload.prompt_len,
        prefill_workspace_bytes=masks + prefill_workspace_bytes(
            spec, bits, micro_batch.prefill_size, workload.prompt_len, is_first=is_first,
            is_last=is_last, on_gpu=on_gpu, group_size=group_size,
        ),
        decode_workspace_bytes=masks + decode_workspace_bytes(
            spec, bits, micro_batch.decode_size, context, is_first=is_first, is_last=is_last,
            on_gpu=on_gpu, group_size=group_size,
        ),
        reserve_bytes=reserve_bytes(device_type),
        overlapped_phases=overlapped_phases,
    )  # fmt: skip
