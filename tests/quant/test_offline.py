"""The offline step: which linears are quantized, from which weights, and bad plans."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.stage import StageRange, chain_forward, load_stage
from llmpq.quant.apply import load_quantized_stage
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


@pytest.mark.parametrize("family", ["opt", "bloom", "llama"])
def test_gptq_model_is_closer_to_the_float_model_than_rtn(
    tiny_hf, family: str, tmp_path: Path
) -> None:
    """Every family calibrates layer by layer; at 3 bits its logits err less than RTN's."""
    model = tiny_hf(family)
    model.save_pretrained(tmp_path)
    gen = torch.Generator().manual_seed(0)
    calib = torch.randint(3, 512, (8, 32), generator=gen)
    ids = torch.randint(3, 512, (4, 32), generator=gen)
    full = StageRange.of(0, 2, 2)
    reference = chain_forward([load_stage(tmp_path, full)], ids, torch.ones_like(ids))

    def logits_error(method: str) -> float:
        qmodel = quantize_model(tmp_path, [3, 3], method, calib_ids=calib)
        stage = load_quantized_stage(tmp_path, full, qmodel)
        logits = chain_forward([stage], ids, torch.ones_like(ids)).float()
        return float((logits - reference).pow(2).mean())

    assert logits_error("gptq") < logits_error("rtn")
