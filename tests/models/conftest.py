"""Tiny random-init causal LMs of every supported family, saved once per session.

Each ``tiny`` fixture value holds the HF model, its save_pretrained directory and the HF
reference outputs (prefill logits and greedy tokens) for the shared left-padded batch.
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers as tf

PAD = 1  # pad_token_id of every tiny config
MAX_NEW_TOKENS = 8
COMMON = {"vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, "pad_token_id": PAD}
LLAMA_STYLE = {"num_hidden_layers": 4, "intermediate_size": 128, "num_key_value_heads": 2}
OPT = {"num_hidden_layers": 4, "ffn_dim": 128, "max_position_embeddings": 256}

# name -> (config, model class); 4 layers, hidden 64, vocab 512 (fast on 2 CPU cores).
TINY = {
    "opt": lambda: (tf.OPTConfig(**OPT, word_embed_proj_dim=64, **COMMON), tf.OPTForCausalLM),
    # like opt-350m: project_in/out (word_embed_proj_dim != hidden_size), post-LayerNorm
    "opt-350m-like": lambda: (
        tf.OPTConfig(**OPT, word_embed_proj_dim=32, do_layer_norm_before=False, **COMMON),
        tf.OPTForCausalLM,
    ),
    "bloom": lambda: (tf.BloomConfig(n_layer=4, **COMMON), tf.BloomForCausalLM),
    "llama-gqa": lambda: (tf.LlamaConfig(**LLAMA_STYLE, **COMMON), tf.LlamaForCausalLM),
    # a window shorter than prompt + generation, so sliding masks and caches are exercised
    "mistral-sliding": lambda: (
        tf.MistralConfig(**LLAMA_STYLE, sliding_window=5, **COMMON),
        tf.MistralForCausalLM,
    ),
    # qkv biases, tied LM head
    "qwen2-tied": lambda: (
        tf.Qwen2Config(**LLAMA_STYLE, tie_word_embeddings=True, **COMMON),
        tf.Qwen2ForCausalLM,
    ),
}


@dataclass(frozen=True, eq=False)
class Tiny:
    """A saved tiny model with HF's outputs for the shared batch (fixtures ``tiny``, ``make_tiny``)."""

    name: str
    model: tf.PreTrainedModel
    path: Path  # save_pretrained directory
    ids: torch.Tensor  # left-padded prompts: [B, T]
    mask: torch.Tensor  # 1 = real token, 0 = padding: [B, T]
    logits: torch.Tensor  # HF prefill logits: [B, T, V]
    tokens: torch.Tensor  # HF generate(do_sample=False): [B, T + MAX_NEW_TOKENS]
    pad: int = PAD
    max_new_tokens: int = MAX_NEW_TOKENS

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def reference(self, model: tf.PreTrainedModel) -> tuple[torch.Tensor, torch.Tensor]:
        """HF's (logits, tokens) for this batch from another model, e.g. a bf16 copy."""
        return hf_reference(model, self.ids, self.mask)


def hf_reference(
    model: tf.PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF prefill logits (position ids given, as generate passes them) and greedy tokens."""
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, T]
    with torch.no_grad(), single_thread():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        tokens = model.generate(
            ids, attention_mask=mask, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
            pad_token_id=PAD,
        )  # fmt: skip
    return logits, tokens


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and a busy 2-core box makes 2 threads crawl)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of lengths 7, 4 and 2: (input_ids [3, 7], attention_mask [3, 7])."""
    lengths = (7, 4, 2)
    ids = torch.randint(
        3, 512, (len(lengths), max(lengths)), generator=torch.Generator().manual_seed(0)
    )
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, -n:] = 1
    return ids.masked_fill(mask == 0, PAD), mask


def save_tiny(name: str, directory: Path, **save_kwargs) -> tf.PreTrainedModel:
    """Build the tiny model ``name`` (seeded) and save it to ``directory``."""
    config, model_class = TINY[name]()
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.save_pretrained(directory, **save_kwargs)
    return model


@pytest.fixture(scope="session")
def make_tiny(batch) -> Callable[..., Tiny]:
    """``make_tiny(name, path, **save_kwargs)``: save a tiny model and compute HF's outputs."""

    def make(name: str, path: Path, **save_kwargs) -> Tiny:
        with single_thread():
            model = save_tiny(name, path, **save_kwargs)
        return Tiny(name, model, path, *batch, *hf_reference(model, *batch))

    return make


@pytest.fixture(scope="session", params=list(TINY))
def tiny(request, tmp_path_factory, make_tiny) -> Tiny:
    return make_tiny(request.param, tmp_path_factory.mktemp(request.param))
