"""Bit packing of quantization codes: nibbles (4-bit), 3-bit spare-bit packing, kernel layouts.

Usage::

    packed = pack_nibbles(codes)            # codes uint8 [N, K] in 0..15 -> uint8 [N, K/2]
    codes = unpack_nibbles(packed)          # the inverse
    packed3 = pack_3bit(pack_nibbles(2 * codes3), dim=1)  # 3-bit codes, doubled -> uint8 [N, 3K/8]
    nibble_bytes = unpack_3bit(packed3, dim=1)            # the inverse: 4 elementwise ops
    cpu = int4_cpu_pack(codes)              # the layout torch._weight_int4pack_mm_for_cpu reads

Nibble bytes (the portable 4-bit layout, the one CUDA's ``_convert_weight_to_int4pack`` takes):
byte ``j`` of a row holds code ``2j`` in its high nibble and code ``2j + 1`` in its low nibble.

3-bit codes travel *doubled*: nibble ``2c`` (data in nibble bits 1-3, bit 0 zero) with half the
scale is the same value for the int4 kernels, ``(2c - 8) * scale/2 + zero = (c - 4) * scale +
zero``. So a byte of doubled codes has six data bits (``0xEE``) and two spare ones (bits 0 and
4). :func:`pack_3bit` cuts ``dim`` into four equal parts ``Q0..Q3`` and keeps three:
``S_q = Q_q | (Q3 >> (q + 1)) & 0x11`` for q = 0, 1, 2, so that the fourth part rides in the
spare bits of the other three: ``3/4`` of the bytes, three 32-bit words per 32 weights.
Unpacking is ``Q_q = S_q & 0xEE`` and ``Q3 = sum_q (S_q & 0x11) << (q + 1)`` (the bits never
overlap, so the sum is an OR), four elementwise ops on 64-bit words; bits never cross a byte.
The codec works on *any* nibble bytes, so the CPU runtime packs the int4 kernel's own (opaque)
layout and rebuilds it per call: weights stay at 3 bits in memory and the matmul is the int4
kernel's. The file format packs along the columns (``dim=1``: each row on its own); the CPU
runtime along the rows of each row chunk (``dim=0``: every op on contiguous memory).
"""

from __future__ import annotations

import torch

DATA3 = 0xEE  # bits 1-3 and 5-7 of a byte of two doubled 3-bit codes
SPARE3 = 0x11  # bits 0 and 4: always zero in doubled codes, so free to carry other bits
INT4_CPU_INNER_K_TILES = 8  # the argument ecosystem-notes §6 verified


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] in 0..15 (K even) -> uint8 [N, K/2], code 2j in the high nibble."""
    codes = codes.to(torch.uint8)
    return (codes[:, 0::2] << 4) | codes[:, 1::2]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> codes uint8 [N, K] (the inverse of :func:`pack_nibbles`)."""
    high, low = packed >> 4, packed & 0x0F  # each [N, K/2]
    return torch.stack([high, low], dim=-1).flatten(-2)


def int4_cpu_pack(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] in 0..15 -> the uint8 [N, K/2] layout of ``_weight_int4pack_mm_for_cpu``.

    The layout interleaves rows and columns in blocks (it is not :func:`pack_nibbles`), but each
    byte still holds two codes, so doubled 3-bit codes give bytes whose bits 0 and 4 are zero.
    """
    return torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), INT4_CPU_INNER_K_TILES)


def _every_byte(byte: int, dtype: torch.dtype) -> int:
    """``byte`` repeated in every byte of a ``dtype`` word (as a signed value of that word)."""
    value = int.from_bytes(bytes([byte]) * dtype.itemsize, "little")
    return value - (1 << 8 * dtype.itemsize) if byte >= 0x80 else value


def pack_3bit(nibble_bytes: torch.Tensor, dim: int) -> torch.Tensor:
    """uint8 [..] of doubled 3-bit codes -> uint8 with ``dim`` cut to 3/4 (see the module doc)."""
    b = nibble_bytes.to(torch.uint8)
    if b.shape[dim] % 4:
        raise ValueError(f"3-bit packing cuts dim {dim} in 4; its size is {b.shape[dim]}")
    if (b & SPARE3).any():
        raise ValueError("3-bit packing takes doubled codes: every nibble must be even")
    q = b.chunk(4, dim)
    return torch.cat([q[i] | ((q[3] >> (i + 1)) & SPARE3) for i in range(3)], dim)


def _word_view(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """``packed`` (uint8) viewed as the widest words that keep each of its 3 parts whole."""
    part_bytes = packed.shape[-1] // 3 if dim in (-1, packed.ndim - 1) else packed.shape[-1]
    for word in (torch.int64, torch.int32, torch.int16):
        if part_bytes % word.itemsize == 0:
            return packed.view(word)
    return packed


def unpack_3bit(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """uint8 with 3 parts along ``dim`` -> the nibble bytes, 4 parts (:func:`pack_3bit` inverse)."""
    words = _word_view(packed, dim)
    dim = dim % packed.ndim
    part = words.shape[dim] // 3
    shape = list(words.shape)
    shape[dim] = 4 * part
    out = torch.empty(shape, dtype=words.dtype, device=words.device)
    torch.bitwise_and(words, _every_byte(DATA3, words.dtype), out=out.narrow(dim, 0, 3 * part))
    spare = (words & _every_byte(SPARE3, words.dtype)).unflatten(dim, (3, part))
    shifts = torch.tensor([1, 2, 3], dtype=words.dtype, device=words.device)
    spare.bitwise_left_shift_(shifts.view(3, *[1] * (spare.ndim - dim - 1)))
    torch.sum(spare, dim=dim, out=out.narrow(dim, 3 * part, part))  # disjoint bits: an OR
    return out.view(torch.uint8)
