"""Tiny random-init causal LMs of every supported family, with HF's outputs as references.

Usage (the fixtures ``batch`` and ``make_tiny`` of the root conftest wrap these)::

    from tiny_models import TINY, Tiny, hf_reference, save_tiny, left_padded_batch

    model = save_tiny("llama-gqa", path)              # seeded, saved with save_pretrained
    logits, tokens = hf_reference(model, ids, mask)   # HF prefill logits, generate() greedy tokens

``tests/`` is on ``sys.path`` in a pytest run (the root conftest's folder), so any test module
or conftest imports this module by name.
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass
from pathlib import Path

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


def left_padded_batch(lengths: tuple[int, ...] = (7, 4, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded left-padded prompts of ``lengths``: (input_ids [B, T], attention_mask [B, T])."""
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
