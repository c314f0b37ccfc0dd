"""Perplexity of a bit plan: the 16-bit plan is the plain model, bits act per layer, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmpq.errors import UserError
from llmpq.models.default import evaluate_perplexity
from llmpq.quality import PerplexityResult, plan_perplexity
from llmpq.quant.calibration import token_ids_of_file
from llmpq.quant.offline import quantize_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tiny_default: Path) -> Path:
    return tiny_default


def test_16_bit_plan_is_the_plain_bf16_model(model_dir: Path) -> None:
    result = plan_perplexity(model_dir, [16, 16])
    ids = token_ids_of_file(model_dir, model_dir / "data" / "heldout.txt")
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    expected = evaluate_perplexity(plain, ids, result.window_tokens, 8)
    assert result.perplexity == pytest.approx(expected, rel=1e-4)
    assert result.tokens_evaluated == ids.numel() - 1 and result.window_tokens == 512
    assert result.text.endswith("heldout.txt") and result.stage_layers == ((0, 2),)


def test_bits_act_per_layer_and_stages_do_not_change_the_result(model_dir: Path) -> None:
    base = plan_perplexity(model_dir, [16, 16]).perplexity
    first = plan_perplexity(model_dir, [3, 16], group_size=64)
    second = plan_perplexity(model_dir, [16, 3], group_size=64)
    assert len({base, first.perplexity, second.perplexity}) == 3
    assert first.bits_per_layer == (3, 16) and first.group_size == 64
    split = plan_perplexity(model_dir, [3, 16], group_size=64, stage_layers=[(0, 1), (1, 2)])
    assert split.perplexity == pytest.approx(first.perplexity, rel=1e-6)
    assert split.stage_layers == ((0, 1), (1, 2))


def test_a_saved_artefact_is_evaluated_as_quantized(model_dir: Path, tmp_path: Path) -> None:
    saved = tmp_path / "q.safetensors"
    fresh = plan_perplexity(model_dir, [4, 8], method="gptq", save_quantized=saved)
    assert saved.is_file() and fresh.method == "gptq"
    from llmpq.quant.state import QuantizedModel

    again = plan_perplexity(model_dir, [4, 8], quantized=QuantizedModel.load(saved))
    assert again.perplexity == fresh.perplexity and again.method == "gptq"
    result = PerplexityResult(**{**fresh.to_dict(), "bits_per_layer": (4, 8),
                                 "stage_layers": ((0, 2),)})  # fmt: skip
    assert result == fresh


def test_user_text_and_bad_input(model_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("Lists are mutable sequences, typically used to store collections. " * 20)
    result = plan_perplexity(model_dir, [8, 8], text=text)
    assert result.text == str(text) and 100 < result.tokens_evaluated < 1400
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    with pytest.raises(UserError, match="too short to evaluate"):
        plan_perplexity(model_dir, [8, 8], text=short)
    with pytest.raises(UserError, match="layer count"):
        plan_perplexity(model_dir, [8, 8, 8])
    with pytest.raises(UserError, match="do not cover the model"):
        plan_perplexity(model_dir, [8, 8], stage_layers=[(0, 1)])
    with pytest.raises(UserError, match="another bit plan"):
        plan_perplexity(model_dir, [8, 8], quantized=quantize_model(model_dir, [4, 4]))
    (tmp_path / "bare").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "bare" / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(UserError, match="--text FILE"):
        plan_perplexity(tmp_path / "bare", [16, 16])


@pytest.mark.slow
def test_default_model_perplexity_orders_the_bitwidths(default_model: Path) -> None:
    layers = json.loads((default_model / "config.json").read_text())["num_hidden_layers"]
    runs = {"16": (16, "rtn"), "8": (8, "rtn"), "4-rtn": (4, "rtn"), "4-gptq": (4, "gptq"),
            "3-rtn": (3, "rtn"), "3-gptq": (3, "gptq")}  # fmt: skip
    ppl = {
        key: plan_perplexity(default_model, [bits] * layers, method=method).perplexity
        for key, (bits, method) in runs.items()
    }
    assert abs(ppl["8"] / ppl["16"] - 1) < 0.01, ppl
    assert ppl["4-gptq"] < ppl["4-rtn"] and ppl["3-gptq"] < ppl["3-rtn"], ppl
    assert ppl["16"] < ppl["4-rtn"] < ppl["3-rtn"] and ppl["8"] <= ppl["4-rtn"], ppl
