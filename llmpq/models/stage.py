"""Run a Hugging Face causal LM as a chain of pipeline stages, each loading only its own weights.

Typical use (single process; a distributed runtime sends the hidden states between ranks)::

    ckpt = Checkpoint("results/models/opt-tiny")
    ranges = split_even(ckpt.config().num_hidden_layers, 2)   # [StageRange(0, 2, ...), ...]
    stages = [load_stage(ckpt, r) for r in ranges]              # reads only its own tensors
    tokens = generate_greedy(stages, input_ids, attention_mask, max_new_tokens=8)
    logits = chain_forward(stages, input_ids, attention_mask)   # prefill logits [B, T, V]

One stage, step by step::

    cache = stage.new_cache()                      # KV cache of this stage's layers only
    step = StepInputs.from_mask(attention_mask, q_len=T)   # mask [B, T]: 1 real, 0 left padding
    out = stage(x, step, cache)   # x: input_ids [B, q] (first) or hidden [B, q, H]
    step = step.next()                             # decode: one more token per sequence

Only hidden states travel between stages: each stage builds its own causal mask, ALiBi bias
or rotary embedding from ``step``. Family specifics live in `llmpq.models.adapters`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel

from llmpq.errors import UserError
from llmpq.models.adapters import Adapter, adapter_for, default_attn_implementation, tensor_name
from llmpq.models.checkpoint import Checkpoint


@dataclass(frozen=True)
class StageRange:
    """Decoder layers ``[start, end)`` of one stage; the first also embeds, the last also decodes."""

    start: int
    end: int
    is_first: bool
    is_last: bool

    @classmethod
    def of(cls, start: int, end: int, num_layers: int) -> StageRange:
        """The range ``[start, end)`` of a ``num_layers``-layer model, flags derived and checked."""
        stage_range = cls(start, end, is_first=start == 0, is_last=end == num_layers)
        stage_range.check(num_layers)
        return stage_range

    @property
    def layer_ids(self) -> range:
        return range(self.start, self.end)

    def check(self, num_layers: int) -> None:
        """UserError unless 0 <= start <= end <= num_layers and the flags match the ends."""
        if not 0 <= self.start <= self.end <= num_layers:
            raise UserError(
                "stage layers",
                f"[{self.start}, {self.end})",
                f"use 0 <= start <= end <= {num_layers} (the model has {num_layers} layers)",
                problem="is out of range",
            )
        if self.is_first != (self.start == 0) or self.is_last != (self.end == num_layers):
            raise UserError(
                "stage layers",
                f"[{self.start}, {self.end}) is_first={self.is_first} is_last={self.is_last}",
                f"the first stage starts at layer 0 and the last ends at layer {num_layers}; "
                "build ranges with StageRange.of or split_even",
                problem="has flags that do not match its layers",
            )


def split_even(num_layers: int, num_stages: int) -> list[StageRange]:
    """``num_stages`` contiguous ranges covering all layers; earlier stages get the remainder."""
    if not 1 <= num_stages <= num_layers:
        raise UserError(
            "num_stages", num_stages, f"use 1 to {num_layers} stages for {num_layers} layers"
        )
    size, extra = divmod(num_layers, num_stages)
    ends = [(k + 1) * size + min(k + 1, extra) for k in range(num_stages)]
    starts = [0, *ends[:-1]]
    return [StageRange.of(s, e, num_layers) for s, e in zip(starts, ends, strict=True)]


@dataclass(frozen=True, eq=False)
class StepInputs:
    """What every stage needs to know about one forward step besides the hidden states."""

    attention_mask_2d: torch.Tensor  # [B, past + q], 1 = real token, 0 = left padding
    position_ids: torch.Tensor  # [B, q]
    past_len: int

    @classmethod
    def from_mask(cls, attention_mask_2d: torch.Tensor, q_len: int) -> StepInputs:
        """The step of the last ``q_len`` tokens of the padding mask.

        Positions are those HF ``generate`` passes (transformers 5, every family): the count of
        real tokens before each one, 0 on left padding (padding is masked out anyway).
        """
        mask = attention_mask_2d.long()  # [B, past + q]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, past + q]
        past_len = mask.shape[1] - q_len
        return cls(mask, positions[:, past_len:], past_len)

    @property
    def q_len(self) -> int:
        return self.position_ids.shape[1]

    def next(self, q_len: int = 1) -> StepInputs:
        """The step after this one, ``q_len`` new real tokens per sequence (decode: 1)."""
        mask = self.attention_mask_2d
        new = mask.new_ones(mask.shape[0], q_len)  # [B, q_len]
        return StepInputs.from_mask(torch.cat([mask, new], dim=1), q_len)

    def to(self, device: torch.device | str) -> StepInputs:
        return StepInputs(
            self.attention_mask_2d.to(device), self.position_ids.to(device), self.past_len
        )


class PipelineStage(nn.Module):
    """Layers ``[start, end)`` of a causal LM, plus embeddings (first) and head (last)."""

    def __init__(
        self,
        config: PretrainedConfig,
        stage_range: StageRange,
        parts: tuple[nn.Module | None, nn.ModuleList, nn.Module | None, nn.Module],
    ) -> None:
        super().__init__()
        self.config = config
        self.stage_range = stage_range
        self.embed, self.layers, self.head, self.extras = parts  # extras: per-step layer inputs

    @property
    def adapter(self) -> Adapter:
        return adapter_for(self.config)

    @property
    def device(self) -> torch.device:
        first = next(self.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def new_cache(self) -> DynamicCache:
        """An empty KV cache; it is indexed by global layer number, filled only for this stage."""
        return DynamicCache(config=self.config)

    def forward(
        self,
        x: torch.Tensor,
        step: StepInputs,
        cache: DynamicCache | None = None,
        *,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Hidden states [B, q, H], or logits [B, q, V] on the last stage.

        ``x`` is input_ids [B, q] on the first stage, hidden states otherwise. Without a cache
        the step must cover the whole sequence. ``logits_to_keep`` > 0 keeps only the last
        positions' logits, as HF ``generate`` does.
        """
        hidden = self.embed(x, step) if self.embed is not None else x  # [B, q, H]
        if len(self.layers):
            run_layer = self.adapter.run_layer
            layer_kwargs = self.extras(hidden, step, cache, self.stage_range.layer_ids)
            for layer, kwargs in zip(self.layers, layer_kwargs, strict=True):
                hidden = run_layer(layer, hidden, kwargs)  # [B, q, H]
        if self.head is None:
            return hidden
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.head(hidden)  # logits: [B, q, V]


def _meta_stage(config: PretrainedConfig, stage_range: StageRange) -> PipelineStage:
    """The stage's modules, built from the HF classes without storage (on the meta device)."""
    adapter = adapter_for(config)
    with torch.device("meta"):
        embed = adapter.build_embed(config) if stage_range.is_first else None
        layers = nn.ModuleList(adapter.build_layer(config, i) for i in stage_range.layer_ids)
        head = adapter.build_head(config) if stage_range.is_last else None
    extras = adapter.build_extras(config)  # rotary buffers are computed, not loaded
    return PipelineStage(config, stage_range, (embed, layers, head, extras))


def _logical_names(stage: PipelineStage) -> dict[str, str]:
    """Stage state-dict key -> logical checkpoint name (a tied LM head reads the embedding)."""
    adapter = stage.adapter
    names: dict[str, str] = {}
    for part, module in (("embed", stage.embed), ("head", stage.head)):
        if module is not None:
            local = module.state_dict()
            names |= {f"{part}.{k}": tensor_name(adapter.BASE_PREFIX, k) for k in local}
    for j, i in enumerate(stage.stage_range.layer_ids):
        prefix = f"{adapter.LAYER_PREFIX}{i}."
        names |= {f"layers.{j}.{k}": prefix + k for k in stage.layers[j].state_dict()}
    if getattr(stage.config, "tie_word_embeddings", False) and "head.lm_head.weight" in names:
        names["head.lm_head.weight"] = adapter.TOKEN_EMBEDDING
    return names


def _load_tensors(
    stage: PipelineStage, ckpt: Checkpoint, dtype: torch.dtype, device: torch.device | str
) -> None:
    """Read exactly the stage's tensors (once each, even if tied) and assign them."""
    stored = {key: ckpt.resolve(name) for key, name in _logical_names(stage).items()}
    tensors = ckpt.read(sorted(set(stored.values())), device=device)
    tensors = {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}
    stage.load_state_dict({key: tensors[k] for key, k in stored.items()}, strict=True, assign=True)
    tensors_now = itertools.chain(stage.named_parameters(), stage.named_buffers())
    left = [name for name, t in tensors_now if t.is_meta]
    if left:
        raise RuntimeError(f"stage {stage.stage_range} left tensors unloaded: {left}")


def load_stage(
    checkpoint: Checkpoint | str | Path,
    stage_range: StageRange,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    attn_implementation: str | None = None,
) -> PipelineStage:
    """Build one stage from a local safetensors checkpoint, reading only its own tensors."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(Path(checkpoint))
    config = ckpt.config()
    stage_range.check(config.num_hidden_layers)
    config._attn_implementation = attn_implementation or default_attn_implementation(config)
    stage = _meta_stage(config, stage_range)
    _load_tensors(stage, ckpt, dtype, device)
    return stage.to(device).eval()


def stage_from_model(model: PreTrainedModel, stage_range: StageRange) -> PipelineStage:
    """A stage sharing (not copying) the modules of an in-memory HF causal LM."""
    config = model.config
    stage_range.check(config.num_hidden_layers)
    adapter = adapter_for(config)
    embed = adapter.embed_of(model) if stage_range.is_first else None
    layers = nn.ModuleList(adapter.layers_of(model)[stage_range.start : stage_range.end])
    head = adapter.head_of(model) if stage_range.is_last else None
    extras = adapter.build_extras(config).to(model.device)
    return PipelineStage(config, stage_range, (embed, layers, head, extras))


def _chain_step(
    stages: Sequence[PipelineStage],
    x: torch.Tensor,
    step: StepInputs,
    caches: Sequence[DynamicCache | None],
    logits_to_keep: int = 0,
) -> torch.Tensor:
    """Run ``x`` through every stage in order; the last returns logits [B, q', V]."""
    for stage, cache in zip(stages, caches, strict=True):
        device = stage.device
        x = stage(x.to(device), step.to(device), cache, logits_to_keep=logits_to_keep)
    return x


@torch.no_grad()
def chain_forward(
    stages: Sequence[PipelineStage], input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Prefill logits [B, T, V] of left-padded ``input_ids`` [B, T] (no KV cache kept)."""
    step = StepInputs.from_mask(attention_mask, input_ids.shape[1])
    return _chain_step(stages, input_ids, step, [None] * len(stages))


def _eos_tensor(eos_token_id: int | Sequence[int] | None, device: torch.device) -> torch.Tensor:
    """The eos ids as a 1-D tensor (empty: never stop early)."""
    if eos_token_id is None:
        eos_token_id = []
    elif isinstance(eos_token_id, int):
        eos_token_id = [eos_token_id]
    return torch.tensor(list(eos_token_id), dtype=torch.long, device=device)


@torch.no_grad()
def generate_greedy(
    stages: Sequence[PipelineStage],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Greedy decoding through the chain, as HF ``generate(do_sample=False)``: [B, T + new].

    ``input_ids`` [B, T] are left-padded (``attention_mask`` 0 on padding). A sequence that
    emits an eos token is continued with ``pad_token_id`` (default: the first eos id); decoding
    stops when all sequences have finished or after ``max_new_tokens``.
    """
    eos = _eos_tensor(eos_token_id, input_ids.device)
    pad = pad_token_id if pad_token_id is not None else int(eos[0]) if len(eos) else 0
    caches = [stage.new_cache() for stage in stages]
    step = StepInputs.from_mask(attention_mask, input_ids.shape[1])
    tokens, x = input_ids, input_ids  # tokens: [B, T + generated]
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = _chain_step(stages, x, step, caches, logits_to_keep=1)  # [B, 1, V]
        next_ids = logits[:, -1].float().argmax(-1).to(input_ids.device)  # [B]
        next_ids = next_ids.masked_fill(finished, pad)
        finished |= torch.isin(next_ids, eos)
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
        if finished.all():
            break
        step, x = step.next(), next_ids[:, None]
    return tokens
