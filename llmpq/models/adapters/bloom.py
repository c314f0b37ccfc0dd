"""BLOOM as pipeline stages (see `llmpq.models.adapters` for the interface).

    embed:  word_embeddings [V, H] -> word_embeddings_layernorm
    layers: BloomBlock, given the ALiBi bias and the mask by the caller; returns a tuple and
            calls its cache ``layer_past``
    head:   ln_f -> lm_head (tied to word_embeddings by default)

Logical names are bare (stored as ``transformer.h.N`` by transformers 5, ``h.N`` in older hub
checkpoints). HF runs BLOOM with eager attention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.models.bloom.modeling_bloom import BloomBlock, build_alibi_tensor

from llmpq.models.adapters import Chain, LayerKwargs, SharedExtras, cache_kwargs, causal_mask

if TYPE_CHECKING:
    from transformers import BloomConfig, BloomForCausalLM, Cache

    from llmpq.models.stage import StepInputs

BASE_PREFIX = ""
LAYER_PREFIX = "h."
TOKEN_EMBEDDING = "word_embeddings.weight"


def build_embed(config: BloomConfig) -> Chain:
    return Chain(
        word_embeddings=nn.Embedding(config.vocab_size, config.hidden_size),
        word_embeddings_layernorm=nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon),
    )


def build_layer(config: BloomConfig, layer_idx: int) -> BloomBlock:
    return BloomBlock(config, layer_idx=layer_idx)


def build_head(config: BloomConfig) -> Chain:
    return Chain(
        ln_f=nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon),
        lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False),
    )


class BloomExtras(SharedExtras):
    """The ALiBi bias and the mask that every BLOOM block of a stage takes."""

    def layer_kwargs(
        self, hidden: torch.Tensor, step: StepInputs, cache: Cache | None, first_layer: int
    ) -> LayerKwargs:
        # alibi: [B * heads, 1, past + q], padding-aware like BloomModel with a 2-D mask
        alibi = build_alibi_tensor(step.attention_mask_2d, self.config.n_head, hidden.dtype)
        mask = causal_mask(self.config, hidden, step, cache, first_layer)
        return {"alibi": alibi, "attention_mask": mask, **cache_kwargs(cache, "layer_past")}


def build_extras(config: BloomConfig) -> BloomExtras:
    return BloomExtras(config)


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: LayerKwargs) -> torch.Tensor:
    return layer(hidden, **kwargs)[0]  # BloomBlock returns (hidden, attention weights)


def embed_of(model: BloomForCausalLM) -> Chain:
    base = model.transformer
    return Chain(
        word_embeddings=base.word_embeddings,
        word_embeddings_layernorm=base.word_embeddings_layernorm,
    )


def layers_of(model: BloomForCausalLM) -> nn.ModuleList:
    return model.transformer.h


def head_of(model: BloomForCausalLM) -> Chain:
    return Chain(ln_f=model.transformer.ln_f, lm_head=model.lm_head)
