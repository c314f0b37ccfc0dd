"""Nibble and 3-bit plane packing: exact round trips, sizes, and the kernels' layout."""

from __future__ import annotations

import pytest
import torch

from llmpq.quant.packing import (
    int4_cpu_pack,
    pack_3bit_planes,
    pack_nibbles,
    unpack_3bit_planes,
    unpack_nibbles,
)


def _codes(rows: int, cols: int, top: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, top + 1, (rows, cols), generator=gen, dtype=torch.uint8)


def test_nibbles_round_trip_with_the_even_code_in_the_high_nibble() -> None:
    codes = _codes(5, 12, 15)
    packed = pack_nibbles(codes)
    assert packed.shape == (5, 6) and packed.dtype == torch.uint8
    assert int(packed[0, 0]) == int(codes[0, 0]) * 16 + int(codes[0, 1])
    assert torch.equal(unpack_nibbles(packed), codes)


# K = 32 and 96 unpack through int32 words, 64 and 4096 through int64 words
@pytest.mark.parametrize("rows, k", [(16, 32), (3, 64), (48, 96), (8, 4096)])
def test_3bit_planes_round_trip_at_3_bits_per_weight(rows: int, k: int) -> None:
    nibble_bytes = pack_nibbles(_codes(rows, k, 7, seed=k) * 2)  # doubled 3-bit codes
    planes = pack_3bit_planes(nibble_bytes)
    assert planes.dtype == torch.int32 and planes.shape == (rows, 3 * k // 32)  # 3 words / 32
    assert planes.nbytes * 8 == 3 * rows * k
    assert torch.equal(unpack_3bit_planes(planes), nibble_bytes)


def test_3bit_planes_hold_the_cpu_kernel_layout_exactly() -> None:
    codes = _codes(32, 256, 7) * 2
    cpu = int4_cpu_pack(codes)  # opaque, but every nibble is an even code <= 14
    assert cpu.shape == (32, 128) and int((cpu & 0x11).max()) == 0
    assert torch.equal(unpack_3bit_planes(pack_3bit_planes(cpu)), cpu)


def test_3bit_planes_need_k_a_multiple_of_32_and_doubled_codes() -> None:
    with pytest.raises(ValueError, match="K % 32"):
        pack_3bit_planes(pack_nibbles(_codes(2, 48, 7) * 2))
    with pytest.raises(ValueError, match="doubled codes"):
        pack_3bit_planes(pack_nibbles(torch.ones(2, 64, dtype=torch.uint8)))
