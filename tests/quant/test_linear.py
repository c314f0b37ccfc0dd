"""QuantLinear: kernel outputs match the dequantized reference; sizes match the layout contract."""

from __future__ import annotations

import pytest
import torch

from llmpq.models.spec import quantized_weight_bytes
from llmpq.quant.linear import (
    COMPUTE_DTYPE,
    Int3Linear,
    Int4Linear,
    Int8Linear,
    module_bytes,
    quant_linear,
)
from llmpq.quant.rtn import QuantizedWeight, quantize_rtn

CUDA = torch.cuda.is_available()


def _linear(n: int, k: int, bits: int, group_size: int = 32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.05
    bias = torch.randn(n, generator=gen) * 0.1
    return quantize_rtn(w, bits, group_size), bias


def _reference(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor) -> torch.Tensor:
    """fp32 matmul of the bf16-cast input with the dequantized weight, plus the bf16 bias."""
    x32 = x.to(COMPUTE_DTYPE).float()
    return x32 @ qw.dequantize().T + bias.to(COMPUTE_DTYPE).float()


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref).abs().max() / ref.abs().max())


# (N, K, expected kernel per bits): N % 16 and K % 16 decide between kernel and fallback
SHAPES = [
    (64, 128, {8: "int8_cpu", 4: "int4_cpu", 3: "int4_cpu"}),
    (40, 128, {8: "int8_cpu", 4: "dequant", 3: "dequant"}),
    (48, 96, {8: "int8_cpu", 4: "int4_cpu", 3: "int4_cpu"}),
]


@pytest.mark.parametrize("n, k, kernels", SHAPES)
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_output_matches_the_dequantized_reference(n: int, k: int, kernels: dict, bits: int) -> None:
    qw, bias = _linear(n, k, bits)
    module = quant_linear(qw, bias)
    assert module.kernel == kernels[bits] and module.bits == bits
    x = torch.randn(2, 5, k, generator=torch.Generator().manual_seed(9))  # [B, T, K] fp32
    y = module(x)
    assert y.shape == (2, 5, n) and y.dtype == torch.float32  # back in the input's dtype
    assert _relative_error(y, _reference(x, qw, bias)) < 8e-3  # bf16 output rounding
    assert torch.equal(module(x.to(torch.bfloat16)).float(), y)  # bf16 in: the same bf16 math


def test_8bit_falls_back_when_k_is_not_a_multiple_of_16() -> None:
    qw, bias = _linear(16, 40, 8)  # the int8 kernel returns garbage for such K
    module = quant_linear(qw, bias)
    assert module.kernel == "dequant"
    x = torch.randn(3, 40)
    assert _relative_error(module(x), _reference(x, qw, bias)) < 8e-3


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_bytes_are_the_layout_contract(bits: int) -> None:
    qw, bias = _linear(64, 256, bits, group_size=64)
    module = quant_linear(qw, bias)
    expected = quantized_weight_bytes(64, 256, bits, 64) + 64 * 2  # + bf16 bias
    assert module_bytes(module) == expected


def test_3bit_module_keeps_only_3_bits_per_weight() -> None:
    module = quant_linear(*_linear(64, 256, 3))
    buffers = dict(module.named_buffers())
    assert set(buffers) == {"bias", "packed", "scales_and_zeros"}
    assert buffers["packed"].shape == (48, 128)  # 3/4 of the rows of the int4 layout [64, 128]
    assert buffers["scales_and_zeros"].shape == (256 // 32 * 64 * 2,)  # chunk-major [G, R, 2]


def test_classes_and_repr() -> None:
    modules = [quant_linear(_linear(32, 64, b)[0]) for b in (8, 4, 3)]
    assert [type(m) for m in modules] == [Int8Linear, Int4Linear, Int3Linear]
    assert "bits=3" in repr(modules[2]) and "bias=False" in repr(modules[2])
    assert modules[0](torch.randn(1, 64)).shape == (1, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("bits", [8, 4, 3])
def test_cuda_kernels_match_the_dequantized_reference(bits: int) -> None:
    qw, bias = _linear(256, 512, bits, group_size=128)
    module = quant_linear(qw, bias, device="cuda")
    assert module.kernel in {"int8_cuda", "int4_cuda", "dequant"}
    x = torch.randn(4, 512)
    y = module(x.cuda().half())
    assert y.dtype == torch.float16
    assert _relative_error(y.cpu(), _reference(x, qw, bias)) < 1e-2


def test_weights_at_odd_addresses_are_copied_aligned() -> None:
    """safetensors hands out tensors at any byte offset; the int8 kernel crashes on those."""
    qw, bias = _linear(64, 128, 8)
    buffer = torch.empty(qw.codes.numel() + 3, dtype=torch.int8)
    buffer[3:] = qw.codes.flatten()
    odd = QuantizedWeight(8, 128, buffer[3:].view(64, 128), qw.scales, None)
    module = quant_linear(odd, bias)
    assert module.weight.data_ptr() % 64 == 0
    x = torch.randn(2, 128)
    assert torch.equal(module(x), quant_linear(qw, bias)(x))
