import json

import pytest
import torch

from llmpq.errors import UserError
from llmpq.models.spec import (
    NAMED_SHAPES,
    ModelSpec,
    family_of,
    model_spec,
    quantized_weight_bytes,
)

MiB = 1024**2


def hf_param_count(spec: ModelSpec) -> int:
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    config = spec.to_hf_config_dict()
    hf_config = CONFIG_MAPPING[config.pop("model_type")](**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())  # a tied head counts once


REQUIRED = ["opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b", "opt-30b",
            "opt-66b", "bloom-560m", "bloom-1b1", "bloom-1b7", "bloom-3b", "bloom-7b1",
            "bloom-176b", "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b", "llama-3-70b"]  # fmt: skip


def test_named_table_covers_the_required_shapes():
    assert set(REQUIRED) <= set(NAMED_SHAPES)


@pytest.mark.parametrize(
    "name", ["opt-125m", "opt-350m", "bloom-560m", "llama-2-70b", "llama-3-8b", "qwen2-7b"]
)
def test_param_count_equals_the_hf_model(name):
    spec = NAMED_SHAPES[name]
    assert spec.param_count() == hf_param_count(spec)


@pytest.mark.parametrize(
    "name, billions",
    [("opt-13b", 12.85), ("opt-30b", 29.97), ("opt-66b", 65.7), ("bloom-176b", 176.2),
     ("llama-2-7b", 6.74), ("llama-2-70b", 68.98)],
)  # fmt: skip
def test_param_counts_match_published_sizes(name, billions):
    assert NAMED_SHAPES[name].param_count() / 1e9 == pytest.approx(billions, rel=0.01)


def test_kv_bytes_per_token_match_peers_table():
    # peers.md §(e.1), 16-bit: Llama-2-70B 0.31 MiB (GQA), OPT-30B 1.31 MiB, BLOOM-176B 3.83 MiB
    assert NAMED_SHAPES["llama-2-70b"].kv_bytes_per_token() / MiB == pytest.approx(0.3125)
    assert NAMED_SHAPES["opt-30b"].kv_bytes_per_token() / MiB == pytest.approx(1.3125)
    assert NAMED_SHAPES["bloom-176b"].kv_bytes_per_token() / MiB == pytest.approx(3.828, rel=1e-3)


def test_quantized_layout_bytes():
    # 8-bit: 1 byte/weight + a 16-bit scale per output row
    assert quantized_weight_bytes(256, 512, 8) == 256 * 512 + 256 * 2
    # 4-bit, group 128: half a byte per weight + scale and zero per (row, group)
    assert quantized_weight_bytes(256, 512, 4) == 256 * (256 + 4 * 4)
    # 3-bit: 32 weights in three 32-bit words
    assert quantized_weight_bytes(256, 512, 3) == 256 * (192 + 4 * 4)
    assert quantized_weight_bytes(256, 512, 16) == 256 * 512 * 2
    with pytest.raises(UserError, match="bits"):
        quantized_weight_bytes(4, 4, 2)


def test_layer_bytes_shrink_with_bits_and_include_metadata():
    spec = NAMED_SHAPES["llama-2-7b"]
    sizes = [spec.layer_weight_bytes(b) for b in (3, 4, 8, 16)]
    assert sizes == sorted(sizes)
    weights = sum(lin.weight_count for lin in spec.layer_linears())
    assert sizes[3] == (weights + spec.layer_norm_param_count()) * 2
    # 4-bit is a bit more than a quarter of 16-bit: scales and zeros cost 4 bytes per 128 weights
    assert sizes[1] / sizes[3] == pytest.approx(0.25 + 4 / 128 / 2, rel=0.01)


def test_flops_and_bytes_helpers():
    spec = NAMED_SHAPES["opt-125m"]
    weights = sum(lin.weight_count for lin in spec.layer_linears())
    assert spec.layer_matmul_flops(batch=2, q_len=3) == 2 * 2 * 3 * weights
    assert spec.layer_attention_flops(1, 1, 10) == 4 * 10 * 768
    assert spec.hidden_bytes_per_token() == 768 * 2
    # the head's copy of a tied embedding is charged to the last stage but stored once
    assert spec.weight_bytes(16) == spec.param_count() * 2


def test_from_hf_config_of_each_family(tmp_path):
    for name in ["opt-350m", "bloom-560m", "llama-3-8b", "qwen2-7b", "mistral-7b"]:
        spec = NAMED_SHAPES[name]
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(spec.to_hf_config_dict()))
        assert model_spec(tmp_path / name) == spec.renamed(name)


def test_spec_dict_round_trip():
    spec = NAMED_SHAPES["llama-2-70b"]
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_bad_models_give_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a supported model family"):
        family_of("gpt2")
    with pytest.raises(UserError, match="neither a directory nor a known model shape"):
        model_spec("opt-31b")
    with pytest.raises(UserError, match="config.json"):
        model_spec(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        model_spec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="hidden_size"):
        model_spec(tmp_path)
    with pytest.raises(UserError, match="num_kv_heads"):
        NAMED_SHAPES["llama-3-8b"].__class__(
            **{**NAMED_SHAPES["llama-3-8b"].to_dict(), "num_kv_heads": 7}
        )
