"""Shared by the quantization tests: one thread, a tiny default-like model, tiny HF models.

* ``tiny_hf(family)``: a random-init OPT / BLOOM / LLaMA (GQA) with hidden 128 and 2 layers,
  fp32, so every linear suits the kernels and group sizes up to 128.
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable

import pytest
import torch
import transformers as tf

TINY_HF = {
    "opt": lambda: (
        tf.OPTConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, ffn_dim=256,
                     num_attention_heads=4, max_position_embeddings=256, word_embed_proj_dim=128),
        tf.OPTForCausalLM,
    ),
    "bloom": lambda: (
        tf.BloomConfig(vocab_size=512, hidden_size=128, n_layer=2, n_head=4),
        tf.BloomForCausalLM,
    ),
    "llama": lambda: (
        tf.LlamaConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2,
                       intermediate_size=256, num_attention_heads=4, num_key_value_heads=2),
        tf.LlamaForCausalLM,
    ),
}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_hf() -> Callable[[str], tf.PreTrainedModel]:
    """``tiny_hf(family)``: a fresh, seeded tiny model of ``family`` ("opt", "bloom", "llama")."""

    def build(family: str) -> tf.PreTrainedModel:
        config, model_class = TINY_HF[family]()
        torch.manual_seed(0)
        return model_class(config).eval()

    return build


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread) -> None:
    """Every quantization test runs on one thread (the root conftest's ``one_thread``)."""
