"""GPTQ: less layer-output error than RTN on correlated inputs; RTN when inputs are white."""

from __future__ import annotations

import pytest
import torch

from llmpq.errors import UserError
from llmpq.quant.gptq import Hessian, quantize_gptq
from llmpq.quant.rtn import quantize_rtn


def _correlated_inputs(tokens: int, k: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    mixing = torch.randn(k, k, generator=gen) / k**0.5 + 0.3 * torch.eye(k)
    return torch.randn(tokens, k, generator=gen) @ mixing  # [T, K], strongly correlated


def _output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    ref = x @ w.T
    return float((x @ w_hat.T - ref).pow(2).mean() / ref.pow(2).mean())


@pytest.mark.parametrize("bits, group_size", [(8, 128), (4, 128), (3, 64)])
def test_gptq_reduces_the_layer_output_error(bits: int, group_size: int) -> None:
    x = _correlated_inputs(2048, 256)
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(2)) * 0.05
    hessian = Hessian(256)
    for chunk in x.split(512):  # accumulated over batches, as calibration does
        hessian.add(chunk)
    gptq = quantize_gptq(w, hessian.matrix(), bits, group_size)
    rtn = quantize_rtn(w, bits, group_size)
    assert gptq.codes.dtype == rtn.codes.dtype and gptq.scales.shape == rtn.scales.shape
    assert _output_error(x, w, gptq.dequantize()) < 0.8 * _output_error(x, w, rtn.dequantize())


def test_with_white_inputs_gptq_is_round_to_nearest() -> None:
    w = torch.randn(32, 256, generator=torch.Generator().manual_seed(3)) * 0.05
    gptq = quantize_gptq(w, torch.eye(256), bits=4, group_size=128)  # nothing to compensate
    rtn = quantize_rtn(w, 4, 128)
    assert torch.equal(gptq.codes, rtn.codes) and torch.equal(gptq.zeros, rtn.zeros)


def test_inputs_never_seen_do_not_break_the_factorization() -> None:
    x = _correlated_inputs(512, 128)
    x[:, 5] = 0.0  # a dead input feature: a zero row and column in H
    hessian = Hessian(128)
    hessian.add(x)
    qw = quantize_gptq(torch.randn(16, 128) * 0.05, hessian.matrix(), bits=3, group_size=128)
    assert torch.isfinite(qw.dequantize()).all()


def test_an_empty_hessian_is_a_user_error() -> None:
    with pytest.raises(UserError, match="calibration"):
        Hessian(64).matrix()
