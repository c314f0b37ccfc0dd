"""Bit packing of quantization codes: nibbles (4-bit), bit planes (3-bit), the int4 kernels' layouts.

Usage::

    packed = pack_nibbles(codes)            # codes uint8 [N, K] in 0..15 -> uint8 [N, K/2]
    codes = unpack_nibbles(packed)          # the inverse
    planes = pack_3bit_planes(pack_nibbles(2 * codes3))   # 3-bit codes, doubled -> int32 [N, 3K/32]
    packed = unpack_3bit_planes(planes)     # the inverse: six elementwise ops, the 3-bit hot path
    cpu = int4_cpu_pack(codes)              # the layout torch._weight_int4pack_mm_for_cpu reads

Nibble bytes (the portable 4-bit layout, the one CUDA's ``_convert_weight_to_int4pack`` takes):
byte ``j`` of a row holds code ``2j`` in its high nibble and code ``2j + 1`` in its low nibble.

3-bit codes travel *doubled*: nibble ``2c`` (bits 1-3, bit 0 zero) with half the scale is the
same value for the int4 kernels, ``(2c - 8) * scale/2 + zero = (c - 4) * scale + zero``, and it
puts the top code bit at nibble bit 3, which lets every shift below go one way. A row of such
nibble bytes ``B`` (``K/2`` bytes, data in bits 1-3 and 5-7) is stored as ``3K/8`` bytes, i.e.
three 32-bit words per 32 weights, in two bit planes:

* plane T, ``K/4`` bytes: ``T[j] = (B[j] & 0x66) >> 1 | (B[j + K/4] & 0x66) << 1``: code bits
  0-1 of both nibbles of two bytes half a row apart;
* plane U, ``K/8`` bytes: ``U[j] = OR over q of (B[j + q K/8] & 0x88) >> q``: code bit 2 of
  both nibbles of four bytes a quarter row apart.

Unpacking is ``(T << 1) & 0x66`` and ``(T >> 1) & 0x66`` for the two halves and
``(U << q) & 0x88`` OR-ed into quarter ``q``, on 64-bit words: partners sit a whole half or
quarter row apart, so results land in contiguous halves and quarters, and bits that cross a
byte boundary are always masked off. The planes work on *any* nibble bytes, so the CPU runtime
stores the planes of the int4 kernel's own (opaque) layout and rebuilds it per call: weights
stay at 3 bits in memory and the matmul is the int4 kernel's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOW2 = 0x66  # bits 1, 2, 5, 6 of a nibble byte: the two low bits of both doubled 3-bit codes
BIT2 = 0x88  # bits 3 and 7: their top bit
DATA3 = LOW2 | BIT2  # bits 0 and 4 are zero in doubled codes
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


def _every_byte(byte: int, dtype: torch.dtype) -> int:
    """``byte`` repeated in every byte of a ``dtype`` word (positive: byte < 0x80)."""
    return int.from_bytes(bytes([byte]) * dtype.itemsize, "little")


def _check_3bit_width(nibble_bytes_per_row: int) -> None:
    if nibble_bytes_per_row % 16:
        raise ValueError(f"3-bit planes need K % 32 == 0, got K = {2 * nibble_bytes_per_row}")


def pack_3bit_planes(nibble_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] of doubled 3-bit codes (all nibbles even) -> int32 [N, 3K/32]: T then U."""
    width = nibble_bytes.shape[1]
    _check_3bit_width(width)
    b = nibble_bytes.to(torch.uint8)
    if (b & (0xFF & ~DATA3)).any():
        raise ValueError("3-bit planes take doubled codes: every nibble must be even and <= 14")
    half, quarter = width // 2, width // 4
    t = ((b[:, :half] & LOW2) >> 1) | ((b[:, half:] & LOW2) << 1)  # [N, K/4]
    u = torch.zeros_like(b[:, :quarter])  # [N, K/8]
    for q in range(4):
        u |= (b[:, q * quarter : (q + 1) * quarter] & BIT2) >> q
    return torch.cat([t, u], dim=1).contiguous().view(torch.int32)  # [N, 3K/32]


@dataclass(frozen=True, eq=False)
class PlaneShifts:
    """Word dtype, shift amounts and masks that unpack 3-bit planes of one width.

    Made once per call and shared by every row chunk (a tiny tensor costs microseconds).
    """

    word: torch.dtype  # int64 when a quarter of plane U (K/8 bytes) is whole words, else int32
    quarters: torch.Tensor  # [4, 1]: U << 0, 1, 2, 3 for quarters 0..3
    low2: int  # LOW2 in every byte of a word
    bit2: int  # BIT2 in every byte of a word

    @classmethod
    def of(cls, nibble_bytes_per_row: int, device: torch.device | str = "cpu") -> PlaneShifts:
        word = torch.int64 if (nibble_bytes_per_row // 4) % 8 == 0 else torch.int32
        quarters = torch.arange(4, dtype=word, device=device)[:, None]
        return cls(word, quarters, _every_byte(LOW2, word), _every_byte(BIT2, word))


def unpack_3bit_planes(planes: torch.Tensor, shifts: PlaneShifts | None = None) -> torch.Tensor:
    """int32 [N, 3K/32] -> uint8 [N, K/2] nibble bytes (the inverse of :func:`pack_3bit_planes`).

    Six elementwise ops (five passes over output-sized words), all but one writing in place.
    """
    rows = planes.shape[0]
    width = planes.shape[1] * 4 * 4 // 3  # K/2 nibble bytes per row (3K/8 bytes stored)
    shifts = shifts or PlaneShifts.of(width, planes.device)
    words = planes.view(shifts.word)  # [N, 3K/8 / word_bytes]
    t_words = words.shape[1] * 2 // 3
    t, u = words[:, :t_words], words[:, t_words:]  # plane T: K/4 bytes, plane U: K/8 bytes
    out = torch.empty(rows, 2, t_words, dtype=shifts.word, device=planes.device)  # 2 halves
    torch.bitwise_left_shift(t, 1, out=out[:, 0])
    torch.bitwise_right_shift(t, 1, out=out[:, 1])
    out.bitwise_and_(shifts.low2)
    top = u[:, None, :] << shifts.quarters  # [N, 4, K/8 bytes]: the top bit of each quarter
    top.bitwise_and_(shifts.bit2)
    out.view(rows, 4, -1).bitwise_or_(top)
    return out.view(torch.uint8).view(rows, width)
