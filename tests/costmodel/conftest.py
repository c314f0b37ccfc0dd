"""Shared by the cost-model tests: a tiny random-init LLaMA checkpoint.

``tiny_llama``: hidden 128, FFN 384, 2 layers, 4 heads / 2 KV heads, vocab 512 (every linear
suits the quantized kernels and group size 128), saved once per session.
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import transformers as tf

    config = tf.LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("costmodel") / "tiny-llama"
    tf.LlamaForCausalLM(config).eval().save_pretrained(path)
    return path
