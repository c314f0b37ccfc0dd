"""Bit packing of quantization codes: nibbles (4-bit), bit planes (3-bit), the int4 kernels' layouts.

Usage::

    packed = pack_nibbles(codes)            # codes uint8 [N, K] in 0..15 -> uint8 [N, K/2]
    codes = unpack_nibbles(packed)          # the inverse
    planes = pack_3bit_planes(packed)       # nibbles all <= 7: uint8 [N, K/2] -> int32 [N, 3K/32]
    packed = unpack_3bit_planes(planes)     # the inverse: 4 vectorized ops, the 3-bit hot path
    cpu = int4_cpu_pack(codes)              # the layout torch._weight_int4pack_mm_for_cpu reads

Nibble bytes (the portable 4-bit layout, the one CUDA's ``_convert_weight_to_int4pack`` takes):
byte ``j`` of a row holds code ``2j`` in its high nibble and code ``2j + 1`` in its low nibble.

3-bit bit planes. A row of nibble bytes ``B`` (``K/2`` bytes, each nibble a 3-bit code, so bits
3 and 7 are zero) is stored as ``3K/8`` bytes, i.e. three 32-bit words per 32 weights:

* plane T, ``K/4`` bytes: ``T[j] = (B[j] & 0x33) | (B[j + K/4] & 0x33) << 2`` (the two low bits
  of both nibbles of two bytes, half a row apart);
* plane U, ``K/8`` bytes: ``U[j] = (B[j] & 0x44) >> 2 | (B[j + K/8] & 0x44) >> 1
  | B[j + K/4] & 0x44 | (B[j + 3K/8] & 0x44) << 1`` (the third bit of four bytes, a quarter
  row apart).

Because partners sit a whole half or quarter row apart, unpacking is a handful of elementwise
ops on 64-bit words whose results land in contiguous halves and quarters of the output; no bit
ever crosses a byte boundary after masking. The planes work on *any* nibble bytes, so the CPU
runtime stores the planes of the kernel's own (opaque) int4 layout and rebuilds it per call: the
weights stay at 3 bits in memory and the matmul is the int4 kernel's.
"""

from __future__ import annotations

import torch

LOW2 = 0x33  # bits 0, 1, 4, 5 of a nibble byte: the two low bits of both codes
BIT2 = 0x44  # bits 2 and 6: the third bit of both codes
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
    byte still holds two codes, so codes <= 7 give bytes whose bits 3 and 7 are zero.
    """
    return torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), INT4_CPU_INNER_K_TILES)


def _word_dtype(nibble_bytes_per_row: int) -> torch.dtype:
    """The widest integer whose size divides a quarter of the plane-U row (K/8 bytes)."""
    return torch.int64 if (nibble_bytes_per_row // 4) % 8 == 0 else torch.int32


def _every_byte(byte: int, dtype: torch.dtype) -> int:
    """``byte`` repeated in every byte of a ``dtype`` word (positive: byte < 0x80)."""
    return int.from_bytes(bytes([byte]) * dtype.itemsize, "little")


def _check_3bit_width(nibble_bytes_per_row: int) -> None:
    if nibble_bytes_per_row % 16:
        raise ValueError(f"3-bit planes need K % 32 == 0, got K = {2 * nibble_bytes_per_row}")


def pack_3bit_planes(nibble_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] whose nibbles are all <= 7 -> int32 [N, 3K/32] (planes T then U)."""
    width = nibble_bytes.shape[1]
    _check_3bit_width(width)
    b = nibble_bytes.to(torch.uint8)
    half, quarter = width // 2, width // 4
    t = (b[:, :half] & LOW2) | ((b[:, half:] & LOW2) << 2)  # [N, K/4]
    q = [b[:, k * quarter : (k + 1) * quarter] & BIT2 for k in range(4)]  # 4 x [N, K/8]
    u = (q[0] >> 2) | (q[1] >> 1) | q[2] | (q[3] << 1)  # [N, K/8]
    return torch.cat([t, u], dim=1).contiguous().view(torch.int32)  # [N, 3K/32]


def unpack_3bit_planes(planes: torch.Tensor) -> torch.Tensor:
    """int32 [N, 3K/32] -> uint8 [N, K/2] nibble bytes (the inverse of :func:`pack_3bit_planes`)."""
    rows = planes.shape[0]
    width = planes.shape[1] * 4 * 4 // 3  # K/2 nibble bytes per row (3K/8 bytes stored)
    word = _word_dtype(width)
    words = planes.view(word)  # [N, 3K/8 / word_bytes]
    t_words = words.shape[1] * 2 // 3
    t, u = words[:, :t_words], words[:, t_words:]  # [N, K/4 bytes], [N, K/8 bytes] as words
    dev = planes.device
    # T: low half of the row is t & mask, high half (t >> 2) & mask: one broadcast op each.
    out = (t[:, None, :] >> torch.tensor([0, 2], dtype=word, device=dev)[:, None]) & _every_byte(
        LOW2, word
    )  # [N, 2, w]
    # U: quarter k gets bit 2/6 of U's bits (2-k, 6-k): shift left 2, 1, 0, then right 1.
    left = torch.tensor([2, 1, 0, 0], dtype=word, device=dev)[:, None]
    right = torch.tensor([0, 0, 0, 1], dtype=word, device=dev)[:, None]
    third = ((u[:, None, :] << left) >> right) & _every_byte(BIT2, word)  # [N, 4, w/4]
    out.view(rows, 4, -1).bitwise_or_(third)
    return out.view(torch.uint8).view(rows, width)
