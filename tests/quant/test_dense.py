"""16-bit linears in oneDNN's packed layout: exact, swapped where they should be, and only there."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmpq.models.stage import StageRange, StepInputs, stage_from_model
from llmpq.quant.apply import quantize_stage
from llmpq.quant.dense import PackedLinear, dense_linear, pack_dense_linears, packing_available
from llmpq.quant.linear import QuantLinear

needs_packing = pytest.mark.skipif(
    not packing_available(torch.zeros(1, dtype=torch.bfloat16)),
    reason="this CPU's oneDNN has no bf16 matmul",
)


def _linear(n: int, k: int, bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias).to(torch.bfloat16)


@needs_packing
@pytest.mark.parametrize("shape", [(37, 64), (256, 128), (100, 33)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_f_linear_bit_for_bit(shape, bias: bool) -> None:
    n, k = shape
    linear = _linear(n, k, bias)
    packed = PackedLinear(linear)
    for x in (torch.randn(1, k), torch.randn(2, 5, k), torch.randn(3, 7, k)[:, -1:]):
        x = x.to(torch.bfloat16)  # the last one is a strided view, as the head's last position
        want = F.linear(x, linear.weight, linear.bias)
        got = packed(x)
        assert got.shape == want.shape and got.dtype == torch.bfloat16
        assert torch.equal(got, want)


@needs_packing
def test_packed_linear_keeps_the_input_dtype() -> None:
    linear = _linear(16, 32, True)
    x = torch.randn(4, 32)
    y = dense_linear(linear)(x)
    assert isinstance(dense_linear(linear), PackedLinear)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.linear(x.bfloat16(), linear.weight, linear.bias).float())


def test_dense_linear_leaves_what_it_cannot_pack() -> None:
    fp32 = nn.Linear(8, 4)
    assert dense_linear(fp32) is fp32  # fp32 weights: not the packed kernel's dtype


def _tiny_stage(tiny_hf, family: str, stage_range: StageRange):
    model = tiny_hf(family).to(torch.bfloat16)
    return model, stage_from_model(model, stage_range).eval()


@needs_packing
@pytest.mark.parametrize("family", ["opt", "bloom", "llama"])
def test_a_packed_stage_computes_what_it_did(tiny_hf, family: str) -> None:
    num_layers = 2
    model, stage = _tiny_stage(tiny_hf, family, StageRange.of(1, num_layers, num_layers))
    quantize_stage(stage, [8, 16])  # layer 1 (this stage's only layer) stays 16-bit
    hidden = torch.randn(2, 5, model.config.hidden_size, dtype=torch.bfloat16)
    step = StepInputs.from_mask(torch.ones(2, 5, dtype=torch.long), 5)
    with torch.no_grad():
        want = stage(hidden, step, stage.new_cache())
        pack_dense_linears(stage)
        got = stage(hidden, step, stage.new_cache())
    assert torch.equal(got, want)
    kinds = {type(m) for m in stage.modules() if isinstance(m, nn.Linear | PackedLinear)}
    assert kinds == {PackedLinear}  # layer 1's linears and the LM head, nothing left behind


@needs_packing
def test_quantized_layers_and_a_tied_head_beside_its_embedding_stay() -> None:
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, ffn_dim=256,
                       num_attention_heads=4, word_embed_proj_dim=128)  # fmt: skip
    torch.manual_seed(0)
    model = OPTForCausalLM(config).to(torch.bfloat16).eval()  # tied embeddings
    stage = stage_from_model(model, StageRange.of(0, 2, 2))
    quantize_stage(stage, [4, 16])
    pack_dense_linears(stage)
    assert all(isinstance(m, QuantLinear) for n, m in stage.layers[0].named_modules()
               if n.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")))  # fmt: skip
    assert any(isinstance(m, PackedLinear) for m in stage.layers[1].modules())
    head_linears = [m for m in stage.head.modules() if isinstance(m, nn.Linear | PackedLinear)]
    assert len(head_linears) == 1 and type(head_linears[0]) is nn.Linear  # still shared
    assert head_linears[0].weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
