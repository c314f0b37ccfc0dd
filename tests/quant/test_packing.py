"""Nibble and 3-bit packing: exact round trips, sizes, and the kernels' layout."""

from __future__ import annotations

import pytest
import torch

from llmpq.quant.packing import (
    int4_cpu_pack,
    pack_3bit,
    pack_nibbles,
    unpack_3bit,
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


# rows-wise K = 32 and 96 unpack through int32 words, 64 and 4096 through int64 words
@pytest.mark.parametrize("rows, k", [(16, 32), (3, 64), (48, 96), (8, 4096)])
def test_3bit_packing_round_trips_at_3_bits_per_weight(rows: int, k: int) -> None:
    nibble_bytes = pack_nibbles(_codes(rows, k, 7, seed=k) * 2)  # doubled 3-bit codes
    packed = pack_3bit(nibble_bytes, dim=1)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, 3 * k // 8)
    assert packed.nbytes * 8 == 3 * rows * k  # three 32-bit words per 32 weights
    assert torch.equal(unpack_3bit(packed, dim=1), nibble_bytes)


def test_the_fourth_part_rides_in_the_spare_bits() -> None:
    nibble_bytes = torch.tensor([[0x2E, 0x40, 0x0C, 0xEE]], dtype=torch.uint8)  # [Q0 Q1 Q2 Q3]
    packed = pack_3bit(nibble_bytes, dim=1)
    # Q3 = 0xEE: bits 1,5 -> Q0 bits 0,4; bits 2,6 -> Q1; bits 3,7 -> Q2
    assert packed.tolist() == [[0x2E | 0x11, 0x40 | 0x11, 0x0C | 0x11]]
    assert torch.equal(unpack_3bit(packed, dim=1), nibble_bytes)


def test_3bit_packing_holds_the_cpu_kernel_layout_exactly() -> None:
    codes = _codes(32, 256, 7) * 2
    cpu = int4_cpu_pack(codes)  # opaque, but every nibble is an even code <= 14
    assert cpu.shape == (32, 128) and int((cpu & 0x11).max()) == 0
    packed = pack_3bit(cpu, dim=0)  # along the rows, as the CPU runtime packs a row chunk
    assert packed.shape == (24, 128)
    assert torch.equal(unpack_3bit(packed, dim=0), cpu)


def test_3bit_packing_needs_doubled_codes_and_four_parts() -> None:
    with pytest.raises(ValueError, match="doubled codes"):
        pack_3bit(pack_nibbles(torch.ones(2, 64, dtype=torch.uint8)), dim=1)
    with pytest.raises(ValueError, match="cuts dim 0 in 4"):
        pack_3bit(pack_nibbles(_codes(6, 64, 7) * 2), dim=0)
