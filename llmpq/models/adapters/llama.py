"""LLaMA-style models (llama, mistral, qwen2) as pipeline stages.

See `llmpq.models.adapters` for the interface.

    embed:  embed_tokens [V, H]
    layers: <Family>DecoderLayer (grouped-query attention; qwen2 has qkv biases), given the
            rotary (cos, sin) and the mask by the caller; sliding-window layers get a sliding mask
    head:   norm (RMSNorm) -> lm_head (untied for LLaMA, may be tied, e.g. small qwen2)

The HF classes are looked up from the model type (``LlamaDecoderLayer``,
``MistralRMSNorm``, ...). Logical names are bare (stored as ``model.layers.N``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch
from torch import nn

from llmpq.models.adapters import Chain, ConfigModule, LayerKwargs, cache_kwargs, causal_mask

if TYPE_CHECKING:
    from transformers import Cache, LlamaConfig, LlamaForCausalLM

    from llmpq.models.stage import StepInputs

BASE_PREFIX = ""
LAYER_PREFIX = "layers."
TOKEN_EMBEDDING = "embed_tokens.weight"
FULL, SLIDING = "full_attention", "sliding_attention"


def hf_class(config: LlamaConfig, suffix: str) -> type[nn.Module]:
    """The HF class ``<Family><suffix>`` of the config's model type, e.g. ``Qwen2DecoderLayer``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # e.g. Qwen2ForCausalLM
    family = causal_lm.__name__.removesuffix("ForCausalLM")
    return getattr(sys.modules[causal_lm.__module__], family + suffix)


def layer_kind(config: LlamaConfig, layer_idx: int) -> str:
    """``full_attention`` or ``sliding_attention``, as transformers' cache decides it."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return layer_types[layer_idx]
    return SLIDING if getattr(config, "sliding_window", None) is not None else FULL


def build_embed(config: LlamaConfig) -> Chain:
    return Chain(
        embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
    )


def build_layer(config: LlamaConfig, layer_idx: int) -> nn.Module:
    return hf_class(config, "DecoderLayer")(config, layer_idx)


def build_head(config: LlamaConfig) -> Chain:
    norm = hf_class(config, "RMSNorm")(config.hidden_size, eps=config.rms_norm_eps)
    return Chain(norm=norm, lm_head=nn.Linear(config.hidden_size, config.vocab_size, bias=False))


class LlamaExtras(ConfigModule):
    """Rotary (cos, sin) for the step's positions and one mask per attention kind."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.rotary_emb = hf_class(config, "RotaryEmbedding")(config=config)

    def forward(
        self, hidden: torch.Tensor, step: StepInputs, cache: Cache | None, layer_ids: range
    ) -> list[LayerKwargs]:
        cos_sin = self.rotary_emb(hidden, position_ids=step.position_ids)  # 2 x [B, q, head_dim]
        kinds = [layer_kind(self.config, i) for i in layer_ids]
        first_of_kind = {kind: layer_ids[kinds.index(kind)] for kind in dict.fromkeys(kinds)}
        masks = {
            kind: causal_mask(self.config, hidden, step, cache, i, sliding=kind == SLIDING)
            for kind, i in first_of_kind.items()
        }
        shared = {"position_embeddings": cos_sin, "position_ids": step.position_ids}
        shared |= cache_kwargs(cache)
        return [{"attention_mask": masks[kind], **shared} for kind in kinds]


def build_extras(config: LlamaConfig) -> LlamaExtras:
    return LlamaExtras(config)


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: LayerKwargs) -> torch.Tensor:
    return layer(hidden, **kwargs)  # the decoder layer returns a Tensor


def embed_of(model: LlamaForCausalLM) -> Chain:
    return Chain(embed_tokens=model.model.embed_tokens)


def layers_of(model: LlamaForCausalLM) -> nn.ModuleList:
    return model.model.layers


def head_of(model: LlamaForCausalLM) -> Chain:
    return Chain(norm=model.model.norm, lm_head=model.lm_head)
