"""Quantized linear modules (the runtime side): 8/4/3-bit weights, fast weight-only kernels.

Usage::

    qw = quantize_rtn(linear.weight, bits=4, group_size=128)     # or quantize_gptq, or a file
    module = quant_linear(qw, bias=linear.bias, device="cpu")     # Int4Linear
    y = module(x)                        # x: [..., K] any float dtype -> y: [..., N], x's dtype
    module.kernel                        # "int4_cpu", "int4_cuda", "int8_cpu", ... or "dequant"

Activations are cast to bf16 for the matmul (the CPU kernels run 30-100x slower on fp32, and
CUDA's int4 kernel takes bf16 only) and the result back to the input's dtype; scales, zeros
and bias are bf16, so a bf16 stage runs with no casts. A module is built for one device: its
buffers are in that device's kernel layout, so build another rather than moving it.

Kernels (ecosystem-notes §6 for the CPU conventions):

==========  ===========================================  ==========================================
bits        CPU                                          CUDA
==========  ===========================================  ==========================================
8           ``_weight_int8pack_mm`` (K % 16 == 0)        the same op where this build has it, else
                                                         gpt-fast's ``linear(x, w.to(bf16)) * s``
4           ``_weight_int4pack_mm_for_cpu`` (N % 16)     ``_weight_int4pack_mm`` (N % 8, K % 128)
3           3/4-byte packing -> the CPU int4 layout      dequantize on the fly, then ``linear``
            per row chunk, then the int4 kernel (N % 16)
==========  ===========================================  ==========================================

Shapes a kernel does not take fall back to ``"dequant"``: codes -> bf16 weight -> ``linear``
each call, slow but exact, with the same memory. The 3-bit CPU path stores the int4 kernel's
own layout packed to 3 bits (:mod:`llmpq.quant.packing`) and rebuilds it, a cache-sized row
chunk at a time, in four elementwise ops: memory stays at 3 bits, the matmul is the int4
kernel's. How the 3-bit path was chosen (K = N = 4096, M = 1, median ms; 2 threads on an
idle 2-core AVX-512 machine unless noted): bf16 ``linear`` 0.84, int4 kernel 0.21, 3-bit as
here 0.56 with 4 MiB row chunks (0.58 at 8 MiB, 0.67 at 1 MiB, 0.89 at 0.5 MiB: per-op
overhead outweighs cache locality); one thread, on a busy machine (CPU time): bf16 1.54, this
1.13, the same with bit planes (six ops per chunk) 1.31, re-packing codes with
``_convert_weight_to_int4pack_for_cpu`` per call 53, dequantizing to a bf16 weight and
``linear`` (the fallback) 79.
"""

from __future__ import annotations

from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from llmpq.models.spec import CHUNK_BYTES_3BIT
from llmpq.quant.packing import (
    int4_cpu_pack,
    pack_3bit,
    pack_nibbles,
    unpack_3bit,
    unpack_nibbles,
)
from llmpq.quant.rtn import QuantizedWeight, grid_values

COMPUTE_DTYPE = torch.bfloat16
INT4_CUDA_INNER_K_TILES = 8  # gpt-fast's choice; needs K % (8 * 16) == 0


class QuantLinear(nn.Module):
    """``y = x @ W^T + b`` with W stored quantized; subclasses hold the buffers and the matmul."""

    bits: int

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, device: torch.device, kernel: str
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.group_size = qw.group_size
        self.kernel = kernel
        bias = None if bias is None else _owned(bias, device, COMPUTE_DTYPE)
        self.register_buffer("bias", bias)  # [N] or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE).contiguous()  # [M, K]
        y = self._matmul(rows)  # [M, N]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, group_size={self.group_size}, kernel={self.kernel}, "
            f"bias={self.bias is not None}"
        )


def _owned(t: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A fresh, allocator-aligned copy: tensors read from safetensors files can sit at any byte
    offset, and the CPU kernels crash on (AVX-512) misaligned weights."""
    return t.detach().to(device, dtype, copy=True).contiguous()


def _cuda_has(op: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", "CUDA")


class Int8Linear(QuantLinear):
    """8-bit per-channel symmetric: int8 weight [N, K] and one bf16 scale per output row."""

    bits = 8

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, device: torch.device
    ) -> None:
        fast = qw.in_features % 16 == 0 and (
            device.type == "cpu" or _cuda_has("_weight_int8pack_mm")
        )
        super().__init__(qw, bias, device, f"int8_{device.type}" if fast else "dequant")
        self.register_buffer("weight", _owned(qw.codes, device, torch.int8))  # [N, K]
        self.register_buffer("scales", _owned(qw.scales, device, COMPUTE_DTYPE))  # [N]

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dequant":
            return F.linear(x, self.weight.to(x.dtype)) * self.scales
        return torch._weight_int8pack_mm(x, self.weight, self.scales)


def _scales_and_zeros(qw: QuantizedWeight, device: torch.device) -> torch.Tensor:
    """The int4 kernels' ``[K / group_size, N, 2]`` (scale, zero) table, bf16.

    3-bit codes reach the kernels doubled, so their scale is halved (exact in bf16).
    """
    scales = qw.scales / 2 if qw.bits == 3 else qw.scales
    table = torch.stack([scales, qw.zeros], dim=-1)  # [N, G, 2]
    return table.transpose(0, 1).contiguous().to(device, COMPUTE_DTYPE)


class _GroupedLinear(QuantLinear):
    """3/4 bits: a (scale, zero) pair per output row and group; shared dequantize fallback."""

    def _dequantized(self, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """bf16 weight [R, K] from int4 codes [R, K] (3-bit ones doubled) and their table."""
        values = grid_values(codes, table[..., 0].T, table[..., 1].T, self.group_size, bits=4)
        return values.to(COMPUTE_DTYPE)


class Int4Linear(_GroupedLinear):
    """4-bit group-wise asymmetric: packed uint8 ``[N, K/2]`` (CPU layout) or its CUDA tiles."""

    bits = 4

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, device: torch.device
    ) -> None:
        n, k = qw.out_features, qw.in_features
        if device.type == "cpu" and n % 16 == 0:
            kernel, packed = "int4_cpu", int4_cpu_pack(qw.codes)  # uint8 [N, K/2]
        elif device.type == "cuda" and n % 8 == 0 and k % (INT4_CUDA_INNER_K_TILES * 16) == 0:
            nibbles = pack_nibbles(qw.codes).to(device)  # uint8 [N, K/2]
            kernel = "int4_cuda"  # int32 [N/8, K/128, 32, 4]: the same N*K/2 bytes, tiled
            packed = torch._convert_weight_to_int4pack(nibbles, INT4_CUDA_INNER_K_TILES)
        else:
            kernel, packed = "dequant", pack_nibbles(qw.codes)
        super().__init__(qw, bias, device, kernel)
        self.register_buffer("packed", packed.to(device))
        self.register_buffer("scales_and_zeros", _scales_and_zeros(qw, device))  # [G, N, 2]

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "int4_cpu":
            return torch._weight_int4pack_mm_for_cpu(
                x, self.packed, self.group_size, self.scales_and_zeros
            )
        if self.kernel == "int4_cuda":
            return torch._weight_int4pack_mm(x, self.packed, self.group_size, self.scales_and_zeros)
        return F.linear(x, self._dequantized(unpack_nibbles(self.packed), self.scales_and_zeros))


def _row_chunks(rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_rows, rows)) for a in range(0, rows, chunk_rows)]


class Int3Linear(_GroupedLinear):
    """3-bit group-wise asymmetric: ``packed`` uint8, 3 bytes per 8 weights (3 words per 32).

    On CPU the output rows are cut into chunks of ``chunk_rows`` (about ``CHUNK_BYTES_3BIT`` of
    int4 layout each); each chunk is packed for the int4 kernel on its own and then to 3 bits
    along its rows (``packed``: [3N/4, K/2]), so a call rebuilds one chunk's int4 bytes
    (cache-sized), multiplies, and moves on: the 4-bit weight never exists whole, and the
    rebuilt bytes are read back from cache. Elsewhere (``dequant``) ``packed`` is the file
    layout, [N, 3K/8]. Codes are doubled (:mod:`llmpq.quant.packing`), so the (scale, zero)
    table holds half scales; it is stored chunk-major, ``[G, rows, 2]`` per chunk, flattened.
    """

    bits = 3

    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None, device: torch.device
    ) -> None:
        n, k = qw.out_features, qw.in_features
        fast = device.type == "cpu" and n % 16 == 0
        super().__init__(qw, bias, device, "int4_cpu" if fast else "dequant")
        rows = (CHUNK_BYTES_3BIT // (k // 2)) // 16 * 16
        self.chunk_rows = min(n, max(16, rows)) if fast else n
        chunks = _row_chunks(n, self.chunk_rows)
        doubled = qw.codes * 2  # [N, K] in 0..14
        if fast:  # each chunk: int4 CPU layout [R, K/2] -> 3/4 of its rows
            packed = torch.cat([pack_3bit(int4_cpu_pack(doubled[a:b]), dim=0) for a, b in chunks])
        else:
            packed = pack_3bit(pack_nibbles(doubled), dim=1)  # [N, 3K/8]
        self.register_buffer("packed", packed.to(device))
        table = _scales_and_zeros(qw, device)  # [G, N, 2]
        flat = torch.cat([table[:, a:b].flatten() for a, b in chunks])  # [G * N * 2]
        self.register_buffer("scales_and_zeros", flat)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dequant":
            table = self.scales_and_zeros.view(-1, self.out_features, 2)  # one chunk
            codes = unpack_nibbles(unpack_3bit(self.packed, dim=1))  # doubled, [N, K]
            return F.linear(x, self._dequantized(codes, table))
        groups = self.in_features // self.group_size
        outputs = []
        for a, b in _row_chunks(self.out_features, self.chunk_rows):
            table = self.scales_and_zeros[groups * a * 2 : groups * b * 2].view(groups, b - a, 2)
            nibble_bytes = unpack_3bit(self.packed[a * 3 // 4 : b * 3 // 4], dim=0)  # [R, K/2]
            outputs.append(
                torch._weight_int4pack_mm_for_cpu(x, nibble_bytes, self.group_size, table)
            )  # [M, R]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)


LINEAR_OF_BITS = MappingProxyType({8: Int8Linear, 4: Int4Linear, 3: Int3Linear})


def quant_linear(
    qw: QuantizedWeight, bias: torch.Tensor | None = None, device: torch.device | str = "cpu"
) -> QuantLinear:
    """The quantized module for ``qw`` on ``device``, with the fastest kernel the shape allows."""
    return LINEAR_OF_BITS[qw.bits](qw, bias, torch.device(device))


def module_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (what the memory model must predict)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
