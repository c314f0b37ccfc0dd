"""The runtime step: bits applied per layer, bytes as the memory model says, served = evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import LlamaForCausalLM

from llmpq.errors import UserError
from llmpq.models.default import PRESETS
from llmpq.models.spec import ModelSpec
from llmpq.models.stage import (
    StageRange,
    StepInputs,
    chain_forward,
    load_stage,
    stage_from_model,
)
from llmpq.quant.apply import apply_quantized, load_quantized_stage, quantize_stage
from llmpq.quant.linear import Int3Linear, Int4Linear, Int8Linear, QuantLinear, module_bytes
from llmpq.quant.offline import quantize_model
from llmpq.quant.state import QuantizedModel

ALL_BITS = (16, 8, 4, 3)


def _default_shape_model() -> LlamaForCausalLM:
    """One decoder layer of the default model's shape (hidden 256, ffn 768, GQA 4/2)."""
    config = PRESETS["default"].llama_config()
    config.num_hidden_layers = 1
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _smollm_shape_model() -> LlamaForCausalLM:
    """One decoder layer of SmolLM2-135M's shape: hidden 576 (not a multiple of 128), 9 heads /
    3 KV heads, FFN 1536, tied embeddings."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=512, hidden_size=576, intermediate_size=1536,
                         num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=1,
                         tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def _full_range(model: nn.Module) -> StageRange:
    layers = model.config.num_hidden_layers
    return StageRange.of(0, layers, layers)


@pytest.mark.parametrize("family", ["default-shape", "smollm-shape", "opt", "bloom", "llama"])
@pytest.mark.parametrize("bits", ALL_BITS)
def test_layer_bytes_match_the_memory_model(tiny_hf, family: str, bits: int) -> None:
    shapes = {"default-shape": _default_shape_model, "smollm-shape": _smollm_shape_model}
    model = shapes[family]() if family in shapes else tiny_hf(family)
    model = model.to(torch.bfloat16)
    stage = quantize_stage(
        stage_from_model(model, _full_range(model)), [bits] * model.config.num_hidden_layers
    )
    spec = ModelSpec.from_hf_config(model.config.to_dict())
    expected = spec.layer_weight_bytes(bits, group_size=128)
    measured = module_bytes(stage.layers[0])
    assert abs(measured - expected) <= 0.02 * expected, (measured, expected)
    quantized = [m for m in stage.layers[0].modules() if isinstance(m, QuantLinear)]
    assert len(quantized) == (0 if bits == 16 else len(spec.layer_linears()))
    if family == "smollm-shape" and bits in (3, 4):  # 576 inputs: group 64, 1536: group 128
        assert {m.in_features: m.group_size for m in quantized} == {576: 64, 1536: 128}
        ids = torch.randint(3, 512, (2, 8))
        step = StepInputs.from_mask(torch.ones_like(ids), 8)
        assert torch.isfinite(stage(ids, step, stage.new_cache()).float()).all()


def test_each_layer_gets_its_own_bits(tiny_default: Path) -> None:
    stage = load_quantized_stage(
        tiny_default, StageRange.of(0, 2, 2), quantize_model(tiny_default, [8, 3])
    )
    kinds = [{type(m) for m in layer.modules() if isinstance(m, (nn.Linear, QuantLinear))}
             for layer in stage.layers]  # fmt: skip
    assert kinds == [{Int8Linear}, {Int3Linear}]
    stage = load_quantized_stage(
        tiny_default, StageRange.of(0, 2, 2), quantize_model(tiny_default, [16, 4])
    )
    linears = [m for m in stage.layers[0].modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 7 and {m.weight.dtype for m in linears} == {torch.bfloat16}
    assert {type(m) for m in stage.layers[1].modules() if isinstance(m, QuantLinear)} == {
        Int4Linear
    }


def _logits(stages, ids: torch.Tensor) -> torch.Tensor:
    return chain_forward(stages, ids, torch.ones_like(ids)).float()


def test_the_served_modules_compute_the_evaluated_weights(tiny_default: Path) -> None:
    """Kernel stage vs a bf16 stage whose nn.Linear weights are the dequantized grid."""
    qmodel = quantize_model(tiny_default, [4, 3], group_size=64)
    ids = torch.randint(3, 512, (2, 24), generator=torch.Generator().manual_seed(0))
    served = _logits([load_quantized_stage(tiny_default, StageRange.of(0, 2, 2), qmodel)], ids)
    reference = load_stage(tiny_default, StageRange.of(0, 2, 2), dtype=torch.bfloat16)
    for i, layer in enumerate(reference.layers):
        for name, qw in qmodel.layer_weights(i).items():
            layer.get_submodule(name).weight.data = qw.dequantize().to(torch.bfloat16)
    expected = _logits([reference], ids)
    assert (served - expected).abs().max() < 0.03 * expected.abs().max()


def test_two_stages_give_the_one_stage_logits(tiny_default: Path) -> None:
    qmodel = quantize_model(tiny_default, [3, 8])
    ids = torch.randint(3, 512, (2, 16), generator=torch.Generator().manual_seed(1))
    one = _logits([load_quantized_stage(tiny_default, StageRange.of(0, 2, 2), qmodel)], ids)
    halves = [StageRange.of(0, 1, 2), StageRange.of(1, 2, 2)]
    two = _logits([load_quantized_stage(tiny_default, r, qmodel) for r in halves], ids)
    assert torch.equal(one, two)


def test_on_the_fly_rtn_equals_the_offline_artefact(tiny_default: Path, tmp_path: Path) -> None:
    path = quantize_model(tiny_default, [3, 4]).save(tmp_path / "q.safetensors")
    loaded = load_quantized_stage(tiny_default, StageRange.of(0, 2, 2), QuantizedModel.load(path))
    fp32 = quantize_stage(load_stage(tiny_default, StageRange.of(0, 2, 2)), [3, 4])
    a, b = dict(loaded.layers.named_buffers()), dict(fp32.layers.named_buffers())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_artefacts_of_another_model_or_stage_are_user_errors(tiny_default: Path, tiny_hf) -> None:
    other = tiny_hf("llama")  # hidden 128, not 256
    stage = stage_from_model(other, _full_range(other))
    with pytest.raises(UserError, match="do not fit the model's"):
        apply_quantized(stage, quantize_model(tiny_default, [4, 16]))
    part = QuantizedModel.load(
        quantize_model(tiny_default, [4, 4]).save(tiny_default.parent / "q.safetensors"),
        layers=[1],
    )
    with pytest.raises(UserError, match="load the file with every layer of the stage"):
        load_quantized_stage(tiny_default, StageRange.of(0, 2, 2), part)
    with pytest.raises(UserError, match="layer count"):
        quantize_stage(stage, [4, 4, 4])
    with pytest.raises(UserError, match="group_size = 48"):
        quantize_stage(stage, [4, 4], group_size=48)
