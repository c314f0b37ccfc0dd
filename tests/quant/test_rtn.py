"""Round-to-nearest grids: error bounds, code ranges, 16-bit scales, bad arguments."""

from __future__ import annotations

import pytest
import torch

from llmpq.errors import UserError
from llmpq.quant.rtn import check_quant_args, quantize_rtn


def _weight(rows: int = 32, cols: int = 256) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(rows, cols, generator=gen) * 0.05 + 0.01


def test_8bit_is_per_channel_symmetric_within_half_a_step() -> None:
    w = _weight()
    qw = quantize_rtn(w, 8)
    assert qw.codes.dtype == torch.int8 and qw.scales.shape == (32,) and qw.zeros is None
    assert qw.scales.dtype == torch.bfloat16
    assert int(qw.codes.abs().max()) >= 126  # the largest weight of a row uses the range
    err = (qw.dequantize() - w).abs()
    assert (err <= 0.5 * qw.scales.float()[:, None] * 1.01).all()


@pytest.mark.parametrize("bits, group_size", [(4, 128), (4, 32), (3, 128), (3, 64)])
def test_grouped_grid_is_within_half_a_step(bits: int, group_size: int) -> None:
    w = _weight()
    qw = quantize_rtn(w, bits, group_size)
    groups = 256 // group_size
    assert qw.scales.shape == qw.zeros.shape == (32, groups)
    assert qw.codes.dtype == torch.uint8 and int(qw.codes.max()) <= 2**bits - 1
    err = (qw.dequantize() - w).abs().view(32, groups, group_size)
    scale, zero = qw.scales.float()[..., None], qw.zeros.float()[..., None]
    # half a step, plus what rounding scale and zero to bf16 can add at the range's ends
    assert (err <= 0.5 * scale * 1.02 + zero.abs() * 2**-8).all()
    assert err.mean() < 0.3 * scale.mean()


def test_fewer_bits_mean_larger_error() -> None:
    w = _weight()
    errors = [(quantize_rtn(w, b).dequantize() - w).pow(2).mean() for b in (8, 4, 3)]
    assert errors[0] < errors[1] < errors[2]


def test_a_constant_group_is_finite_and_exact_to_bf16() -> None:
    w = torch.full((16, 128), 0.25)
    for bits in (8, 4, 3):
        deq = quantize_rtn(w, bits).dequantize()
        assert torch.isfinite(deq).all() and torch.allclose(deq, w, rtol=1e-2)


@pytest.mark.parametrize(
    "bits, group_size, k, needle",
    [
        (5, 128, 256, "bits = 5"),
        (4, 48, 256, "group_size = 48"),
        (
            3,
            256,
            48,
            "that divides the input features (48)",
        ),
    ],
)
def test_bad_arguments_are_user_errors(bits: int, group_size: int, k: int, needle: str) -> None:
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_quant_args(bits, group_size, k)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("k, expected", [(576, 64), (1536, 128), (96, 32), (256, 128)])
def test_a_group_size_that_does_not_divide_the_inputs_becomes_the_largest_that_does(
    bits: int, k: int, expected: int
) -> None:
    from llmpq.models.spec import quantized_weight_bytes

    w = torch.randn(64, k, generator=torch.Generator().manual_seed(0))
    qw = quantize_rtn(w, bits, group_size=128)
    assert qw.group_size == expected and qw.scales.shape == (64, k // expected)
    assert torch.allclose(qw.dequantize(), w, atol=float(w.abs().max()) / 2**bits)
    # the memory model counts the scales and zeros of the group size the linear really got
    stored = (qw.codes.shape[0] * -(-k * bits // 32) * 4) + 2 * qw.scales.numel() * 2
    assert quantized_weight_bytes(64, k, bits, 128) == stored


def test_16_bits_has_no_quantizer() -> None:
    with pytest.raises(UserError, match="16 needs none"):
        quantize_rtn(_weight(), 16)
