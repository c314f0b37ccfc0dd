"""Family adapters: what differs between OPT, BLOOM and LLaMA-style models when run as stages.

`llmpq.models.stage` stays family-agnostic and asks the adapter of a config for everything
family-specific::

    adapter = adapter_for(config)                  # the module llmpq.models.adapters.<family>
    with torch.device("meta"):
        layer = adapter.build_layer(config, 5)     # HF decoder layer with its global index
    kwargs = adapter.build_extras(config)(hidden, step, cache, range(4, 8))  # one dict per layer
    hidden = adapter.run_layer(layer, hidden, kwargs[1])

Every adapter module (`opt`, `bloom`, `llama`) has the same names; :class:`Adapter` lists them.
Tensor names are *logical*: what the checkpoint stores after stripping the ``model.`` /
``transformer.`` prefix (see `llmpq.models.checkpoint`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn

from llmpq.models.spec import family_of

if TYPE_CHECKING:
    from transformers import Cache, PretrainedConfig, PreTrainedModel

    from llmpq.models.stage import StepInputs

LayerKwargs = dict[str, Any]


class Adapter(Protocol):
    """The interface each family module implements (modules satisfy it structurally)."""

    BASE_PREFIX: str  # logical prefix of embedding and head tensors (the LM head sits at the root)
    LAYER_PREFIX: str  # logical name of layer i's tensors: f"{LAYER_PREFIX}{i}.{name}"
    TOKEN_EMBEDDING: str  # logical name of the token embedding, read for a tied LM head

    def build_embed(self, config: PretrainedConfig) -> nn.Module:
        """Embeddings of the first stage; ``forward(input_ids, step) -> hidden [B, q, H]``."""

    def build_layer(self, config: PretrainedConfig, layer_idx: int) -> nn.Module:
        """One HF decoder layer, built with its global index (the KV-cache slot it writes)."""

    def build_head(self, config: PretrainedConfig) -> nn.Module:
        """Final norm (and projection) and LM head; ``forward(hidden) -> logits [B, q, V]``."""

    def build_extras(self, config: PretrainedConfig) -> nn.Module:
        """Per-step layer inputs; ``forward(hidden, step, cache, layer_ids) -> [kwargs per layer]``."""

    def run_layer(
        self, layer: nn.Module, hidden: torch.Tensor, kwargs: LayerKwargs
    ) -> torch.Tensor:
        """Run one layer, returning hidden states [B, q, H] whatever the layer returns."""

    def embed_of(self, model: PreTrainedModel) -> nn.Module:
        """The embedding part of an in-memory HF model (its modules, shared, not copied)."""

    def layers_of(self, model: PreTrainedModel) -> nn.ModuleList:
        """The decoder layers of an in-memory HF model."""

    def head_of(self, model: PreTrainedModel) -> nn.Module:
        """The head part of an in-memory HF model (its modules, shared, not copied)."""


def adapter_for(config: PretrainedConfig) -> Adapter:
    """The adapter module of the config's family; UserError for unsupported model types."""
    family = family_of(config.model_type)
    return cast(Adapter, importlib.import_module(f"llmpq.models.adapters.{family}"))


def tensor_name(base_prefix: str, local_key: str) -> str:
    """Logical checkpoint name of an embedding or head tensor; ``lm_head.*`` sits at the root."""
    return local_key if local_key.startswith("lm_head.") else base_prefix + local_key


def default_attn_implementation(config: PretrainedConfig) -> str:
    """The attention kernel HF picks for this model on its own: sdpa where supported, else eager."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


class Chain(nn.Sequential):
    """Named HF modules applied in order; ``step`` is accepted and ignored (no positions)."""

    def __init__(self, **modules: nn.Module | None) -> None:
        super().__init__(OrderedDict((n, m) for n, m in modules.items() if m is not None))

    def forward(self, x: torch.Tensor, step: StepInputs | None = None) -> torch.Tensor:
        for module in self:
            x = module(x)
        return x


class ConfigModule(nn.Module):
    """Base of the per-family extras modules: holds the (stage's) config."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.config = config


class SharedExtras(ConfigModule):
    """Extras whose layer inputs are the same for every layer of the stage (OPT, BLOOM)."""

    def forward(
        self, hidden: torch.Tensor, step: StepInputs, cache: Cache | None, layer_ids: range
    ) -> list[LayerKwargs]:
        return [self.layer_kwargs(hidden, step, cache, layer_ids.start)] * len(layer_ids)

    def layer_kwargs(
        self, hidden: torch.Tensor, step: StepInputs, cache: Cache | None, first_layer: int
    ) -> LayerKwargs:
        raise NotImplementedError


def causal_mask(
    config: PretrainedConfig,
    hidden: torch.Tensor,
    step: StepInputs,
    cache: Cache | None,
    layer_idx: int,
    sliding: bool = False,
) -> torch.Tensor | None:
    """The 4-D mask HF builds for this step, sized against cache layer ``layer_idx``.

    A stage cache only fills its own layers, so the mask must be sized against one of them
    (the default, layer 0, is empty on every stage but the first). None means "plain causal"
    (the sdpa fast path when nothing is padded). A CPU decode step always gets its mask
    (``[B, 1, 1, context]``, tiny): without one HF sends grouped-query attention through
    sdpa's ``enable_gqa``, which CPU's flash kernel runs 2.7x slower (86 against 32 µs per call
    on the default model's layers, batch 4, context 65), so an unpadded batch ran its layers
    about 15 % slower than the left-padded batches the profiler times.
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    make = create_sliding_window_causal_mask if sliding else create_causal_mask
    return make(
        config=config,
        inputs_embeds=hidden,  # only its batch size, length and dtype are used
        attention_mask=step.attention_mask_2d,
        position_ids=step.position_ids,
        layer_idx=layer_idx,
        allow_is_causal_skip=not (hidden.device.type == "cpu" and step.q_len == 1),
        **{cache_keyword(): cache},
    )


@functools.cache
def cache_keyword() -> str:
    """What the installed transformers calls the cache argument of its decoder layers and mask
    builders: ``cache`` since the rename that deprecates ``past_key_values`` (removed in 5.40),
    ``past_key_values`` before it. Read once off ``create_causal_mask``'s signature, so that
    every 5.x release the package admits gets the name it knows and no deprecation warning."""
    from transformers.masking_utils import create_causal_mask

    params = inspect.signature(create_causal_mask).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(cache: Cache | None, name: str | None = None) -> LayerKwargs:
    """The cache keyword arguments of a decoder layer (BLOOM calls its cache ``layer_past``)."""
    return {name or cache_keyword(): cache, "use_cache": cache is not None}
