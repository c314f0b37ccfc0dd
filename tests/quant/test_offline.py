"""The offline step: which linears are quantized, from which weights, and bad plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.quant.offline import quantize_model
from llmpq.quant.rtn import quantize_rtn

LINEARS = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}  # fmt: skip


def test_rtn_rounds_the_stored_weights_of_quantized_layers(tiny_default: Path) -> None:
    qmodel = quantize_model(tiny_default, [3, 16], group_size=64)
    assert qmodel.bits_per_layer == (3, 16) and qmodel.method == "rtn"
    assert set(qmodel.layer_weights(0)) == LINEARS and qmodel.layer_weights(1) == {}
    key = Checkpoint(tiny_default).resolve("layers.0.mlp.down_proj.weight")
    stored = Checkpoint(tiny_default).read([key])[key]
    expected = quantize_rtn(stored, 3, 64)
    got = qmodel.layer_weights(0)["mlp.down_proj"]
    assert got.bits == 3 and torch.equal(got.codes, expected.codes)


def test_gptq_calibrates_on_the_models_own_text(tiny_default: Path) -> None:
    gptq = quantize_model(tiny_default, [4, 8], "gptq", calib_windows=4, calib_window_tokens=128)
    rtn = quantize_model(tiny_default, [4, 8])
    assert gptq.method == "gptq" and set(gptq.weights) == set(rtn.weights)
    assert gptq.layer_weights(1)["mlp.up_proj"].bits == 8
    changed = [
        k for k in rtn.weights if not torch.equal(gptq.weights[k].codes, rtn.weights[k].codes)
    ]
    assert len(changed) == len(rtn.weights)  # error compensation moved codes in every linear


@pytest.mark.parametrize(
    "bits, method, group_size, needle",
    [
        ([4, 4, 4], "rtn", 128, "does not match the model's layer count"),
        ([4, 5], "rtn", 128, "bits = 5"),
        ([4, 4], "awq", 128, "method = 'awq'"),
        ([3, 16], "rtn", 48, "group_size = 48"),
    ],
)
def test_bad_plans_are_user_errors(
    tiny_default: Path, bits: list[int], method: str, group_size: int, needle: str
) -> None:
    with pytest.raises(UserError, match=needle):
        quantize_model(tiny_default, bits, method, group_size)
