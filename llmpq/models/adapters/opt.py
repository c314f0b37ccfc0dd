"""OPT as pipeline stages (see `llmpq.models.adapters` for the interface).

    embed:  embed_tokens [V, E] -> project_in (E != H, as in opt-350m) + learned positions
    layers: OPTDecoderLayer (pre- or post-LayerNorm, per ``do_layer_norm_before``)
    head:   final_layer_norm (pre-LN models only) -> project_out -> lm_head [V, E]

Logical names sit under ``decoder.`` (stored as ``model.decoder.`` by transformers 5, bare
``decoder.`` in hub checkpoints such as facebook/opt-125m); the LM head is tied by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.models.opt.modeling_opt import OPTDecoderLayer, OPTLearnedPositionalEmbedding

from llmpq.models.adapters import Chain, LayerKwargs, SharedExtras, cache_kwargs, causal_mask

if TYPE_CHECKING:
    from transformers import Cache, OPTConfig, OPTForCausalLM

    from llmpq.models.stage import StepInputs

BASE_PREFIX = "decoder."
LAYER_PREFIX = "decoder.layers."
TOKEN_EMBEDDING = "decoder.embed_tokens.weight"


class OPTEmbed(nn.Module):
    """Token embeddings, ``project_in`` and learned positions, as at the top of OPTDecoder."""

    def __init__(
        self,
        embed_tokens: nn.Embedding,
        embed_positions: OPTLearnedPositionalEmbedding,
        project_in: nn.Linear | None,
    ) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_positions = embed_positions
        self.project_in = project_in

    def forward(self, input_ids: torch.Tensor, step: StepInputs) -> torch.Tensor:
        embeds = self.embed_tokens(input_ids)  # [B, q, E]
        positions = self.embed_positions(
            step.attention_mask_2d, step.past_len, position_ids=step.position_ids
        )  # [B, q, H]
        if self.project_in is not None:
            embeds = self.project_in(embeds)  # [B, q, H]
        return embeds + positions


def _projections(config: OPTConfig) -> tuple[nn.Linear | None, nn.Linear | None]:
    """(project_in, project_out), present only when word_embed_proj_dim != hidden_size."""
    if config.word_embed_proj_dim == config.hidden_size:
        return None, None
    e, h = config.word_embed_proj_dim, config.hidden_size
    return nn.Linear(e, h, bias=False), nn.Linear(h, e, bias=False)


def build_embed(config: OPTConfig) -> OPTEmbed:
    project_in, _ = _projections(config)
    return OPTEmbed(
        nn.Embedding(config.vocab_size, config.word_embed_proj_dim, config.pad_token_id),
        OPTLearnedPositionalEmbedding(config.max_position_embeddings, config.hidden_size),
        project_in,
    )


def build_layer(config: OPTConfig, layer_idx: int) -> OPTDecoderLayer:
    return OPTDecoderLayer(config, layer_idx=layer_idx)


def build_head(config: OPTConfig) -> Chain:
    _, project_out = _projections(config)
    final_norm = None  # post-LN models (opt-350m) end without one
    if config.do_layer_norm_before and not config._remove_final_layer_norm:
        affine = config.layer_norm_elementwise_affine
        final_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=affine)
    return Chain(
        final_layer_norm=final_norm,
        project_out=project_out,
        lm_head=nn.Linear(config.word_embed_proj_dim, config.vocab_size, bias=False),
    )


class OPTExtras(SharedExtras):
    """The causal/padding mask and position ids that every OPT layer of a stage takes."""

    def layer_kwargs(
        self, hidden: torch.Tensor, step: StepInputs, cache: Cache | None, first_layer: int
    ) -> LayerKwargs:
        mask = causal_mask(self.config, hidden, step, cache, first_layer)
        return {"attention_mask": mask, "position_ids": step.position_ids, **cache_kwargs(cache)}


def build_extras(config: OPTConfig) -> OPTExtras:
    return OPTExtras(config)


def run_layer(layer: nn.Module, hidden: torch.Tensor, kwargs: LayerKwargs) -> torch.Tensor:
    return layer(hidden, **kwargs)  # OPTDecoderLayer returns a Tensor


def embed_of(model: OPTForCausalLM) -> OPTEmbed:
    decoder = model.model.decoder
    return OPTEmbed(decoder.embed_tokens, decoder.embed_positions, decoder.project_in)


def layers_of(model: OPTForCausalLM) -> nn.ModuleList:
    return model.model.decoder.layers


def head_of(model: OPTForCausalLM) -> Chain:
    decoder = model.model.decoder
    return Chain(
        final_layer_norm=decoder.final_layer_norm,
        project_out=decoder.project_out,
        lm_head=model.lm_head,
    )
