"""Model shapes and the sizes the planner needs, with no weights loaded.

Usage::

    from llmpq.models.spec import model_spec

    spec = model_spec("opt-30b")                 # built-in shape table, or a local HF checkpoint dir
    spec.layer_weight_bytes(bits=4)              # one decoder layer at 4 bits, scales/zeros included
    spec.kv_bytes_per_token()                    # K and V of every layer, 16-bit
    spec.embedding_bytes(), spec.head_bytes()    # charged to the first and last stage

Three families cover the supported models: ``opt``, ``bloom`` and ``llama`` (LLaMA 2/3, Mistral
and Qwen2: rotary positions, RMSNorm, gated MLP, grouped-query attention).

Quantized storage layout (the contract the quantized modules in ``llmpq.quant`` honour, so that
measured bytes match these formulas):

* 16 bits: 2 bytes per weight.
* 8 bits: 1 byte per weight + one 16-bit scale per output channel (symmetric, per channel).
* 4 and 3 bits: ``bits/8`` bytes per weight (3-bit packed, 32 weights in three 32-bit words)
  + a 16-bit scale and a 16-bit zero per output channel and group of ``group_size`` inputs.
* Biases, norms, embeddings and the LM head stay 16-bit.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from llmpq.errors import UserError

SUPPORTED_BITS = (3, 4, 8, 16)
DEFAULT_GROUP_SIZE = 128
GROUP_SIZES = (32, 64, 128, 256)  # what the int4 kernels accept


def group_size_for(in_features: int, group_size: int = DEFAULT_GROUP_SIZE) -> int | None:
    """The group size a 3/4-bit linear with ``in_features`` inputs gets when ``group_size`` is
    asked for: the largest of ``GROUP_SIZES`` up to it that divides the inputs (hidden sizes
    that are not powers of two: 576 gets 64), None if none does."""
    fits = [g for g in GROUP_SIZES if g <= group_size and in_features % g == 0]
    return max(fits) if fits else None


# int4 bytes the CPU 3-bit kernel rebuilds per row chunk (measured best of 0.5-8 MiB); here, not
# in llmpq.quant.linear, so the memory model can use it without importing torch
CHUNK_BYTES_3BIT = 4 << 20
BYTES_16BIT = 2

# HF `model_type` -> the llmpq family whose adapter runs it.
FAMILY_OF_MODEL_TYPE = MappingProxyType(
    {"opt": "opt", "bloom": "bloom", "llama": "llama", "mistral": "llama", "qwen2": "llama"}
)


def family_of(model_type: str) -> str:
    """The llmpq family ("opt", "bloom" or "llama") of an HF ``model_type``; UserError if unsupported."""
    try:
        return FAMILY_OF_MODEL_TYPE[model_type]
    except KeyError:
        raise UserError(
            "config.json model_type",
            model_type,
            f"use a model of a supported family ({', '.join(sorted(FAMILY_OF_MODEL_TYPE))})",
            problem="is not a supported model family",
        ) from None


@dataclass(frozen=True)
class LinearShape:
    """One linear module of a decoder layer: ``y = x @ W.T + b`` with W ``[out_features, in_features]``."""

    name: str
    out_features: int
    in_features: int
    bias: bool

    @property
    def weight_count(self) -> int:
        return self.out_features * self.in_features


def quantized_weight_bytes(
    out_features: int, in_features: int, bits: int, group_size: int = DEFAULT_GROUP_SIZE
) -> int:
    """Bytes of one weight matrix stored at ``bits`` (see the module docstring for the layout)."""
    check_bits(bits)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise UserError("group_size", group_size, "use a positive integer such as 128")
    if bits == 16:
        return out_features * in_features * BYTES_16BIT
    if bits == 8:
        return out_features * in_features + out_features * BYTES_16BIT
    groups = math.ceil(in_features / (group_size_for(in_features, group_size) or group_size))
    packed = math.ceil(in_features * bits / 32) * 4  # whole 32-bit words per output row
    return out_features * (packed + groups * 2 * BYTES_16BIT)


def check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise UserError("bits", bits, f"choose one of {list(SUPPORTED_BITS)}")


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only causal LM; sizes are methods.

    ``embed_dim`` is OPT's ``word_embed_proj_dim`` (equal to ``hidden_size`` elsewhere).
    ``qkv_bias``/``out_bias``/``mlp_bias`` say which linears carry biases.
    """

    name: str
    family: str  # opt | bloom | llama
    model_type: str  # the HF model_type (opt, bloom, llama, mistral, qwen2)
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    max_positions: int
    embed_dim: int
    tie_word_embeddings: bool
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    final_norm: bool = True  # OPT-350m (post-norm) has no final layer norm

    def __post_init__(self) -> None:
        if self.family not in ("opt", "bloom", "llama"):
            raise UserError("model.family", self.family, "use opt, bloom or llama")
        for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "ffn_dim"):
            value = getattr(self, f)
            if not isinstance(value, int) or value <= 0:
                raise UserError(f"model.{f}", value, "use a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise UserError(
                "model.num_kv_heads",
                self.num_kv_heads,
                f"use a divisor of num_heads={self.num_heads}",
            )

    # ------------------------------------------------------------------ decoder layer
    def group_sizes(self, group_size: int = DEFAULT_GROUP_SIZE) -> dict[str, int]:
        """The group size each linear of a decoder layer gets at 3/4 bits when ``group_size`` is
        asked for (:func:`group_size_for`: 576 inputs get 64 where 128 is asked)."""
        return {lin.name: group_size_for(lin.in_features, group_size) or group_size
                for lin in self.layer_linears()}  # fmt: skip

    def layer_linears(self) -> tuple[LinearShape, ...]:
        """The quantizable linear modules of one decoder layer, named as in the HF module tree."""
        h, f = self.hidden_size, self.ffn_dim
        q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.family == "opt":
            return (
                LinearShape("self_attn.q_proj", h, h, self.qkv_bias),
                LinearShape("self_attn.k_proj", h, h, self.qkv_bias),
                LinearShape("self_attn.v_proj", h, h, self.qkv_bias),
                LinearShape("self_attn.out_proj", h, h, self.out_bias),
                LinearShape("fc1", f, h, self.mlp_bias),
                LinearShape("fc2", h, f, self.mlp_bias),
            )
        if self.family == "bloom":
            return (
                LinearShape("self_attention.query_key_value", 3 * h, h, self.qkv_bias),
                LinearShape("self_attention.dense", h, h, self.out_bias),
                LinearShape("mlp.dense_h_to_4h", f, h, self.mlp_bias),
                LinearShape("mlp.dense_4h_to_h", h, f, self.mlp_bias),
            )
        return (
            LinearShape("self_attn.q_proj", q_out, h, self.qkv_bias),
            LinearShape("self_attn.k_proj", kv_out, h, self.qkv_bias),
            LinearShape("self_attn.v_proj", kv_out, h, self.qkv_bias),
            LinearShape("self_attn.o_proj", h, q_out, self.out_bias),
            LinearShape("mlp.gate_proj", f, h, self.mlp_bias),
            LinearShape("mlp.up_proj", f, h, self.mlp_bias),
            LinearShape("mlp.down_proj", h, f, self.mlp_bias),
        )

    def _norm_param_count(self) -> int:
        """Parameters of one norm: LayerNorm (weight + bias) for OPT/BLOOM, RMSNorm (weight) for LLaMA."""
        return self.hidden_size * (1 if self.family == "llama" else 2)

    def layer_norm_param_count(self) -> int:
        return 2 * self._norm_param_count()

    def layer_bias_count(self) -> int:
        return sum(lin.out_features for lin in self.layer_linears() if lin.bias)

    def layer_param_count(self) -> int:
        linears = sum(lin.weight_count for lin in self.layer_linears())
        return linears + self.layer_bias_count() + self.layer_norm_param_count()

    def layer_weight_bytes(self, bits: int, group_size: int = DEFAULT_GROUP_SIZE) -> int:
        """Bytes of one decoder layer with its linears at ``bits``; biases and norms stay 16-bit."""
        linears = sum(
            quantized_weight_bytes(lin.out_features, lin.in_features, bits, group_size)
            for lin in self.layer_linears()
        )
        return linears + (self.layer_bias_count() + self.layer_norm_param_count()) * BYTES_16BIT

    def layer_kv_bytes_per_token(self, bytes_per_value: int = BYTES_16BIT) -> int:
        """K and V of one layer for one token (grouped-query attention stores ``num_kv_heads``)."""
        return 2 * self.num_kv_heads * self.head_dim * bytes_per_value

    def kv_bytes_per_token(self, bytes_per_value: int = BYTES_16BIT) -> int:
        """K and V of every layer for one token."""
        return self.num_layers * self.layer_kv_bytes_per_token(bytes_per_value)

    def hidden_bytes_per_token(self, bytes_per_value: int = BYTES_16BIT) -> int:
        """Activation sent between pipeline stages, per token."""
        return self.hidden_size * bytes_per_value

    def layer_matmul_flops(self, batch: int, q_len: int) -> int:
        """FLOPs of the layer's linears for ``batch`` sequences of ``q_len`` new tokens."""
        return 2 * batch * q_len * sum(lin.weight_count for lin in self.layer_linears())

    def layer_attention_flops(self, batch: int, q_len: int, kv_len: int) -> int:
        """FLOPs of scores (Q K^T) and the weighted sum (A V) against ``kv_len`` keys."""
        return 4 * batch * q_len * kv_len * self.num_heads * self.head_dim

    # ------------------------------------------------------------------ embeddings and head
    def embedding_param_count(self) -> int:
        """First stage: token embeddings, plus learned positions and project_in (OPT), or the
        embedding layer norm (BLOOM)."""
        count = self.vocab_size * self.embed_dim
        if self.family == "opt":
            count += (self.max_positions + 2) * self.hidden_size  # OPT offsets positions by 2
            if self.embed_dim != self.hidden_size:
                count += self.hidden_size * self.embed_dim  # project_in, no bias
        if self.family == "bloom":
            count += self._norm_param_count()
        return count

    def head_param_count(self) -> int:
        """Last stage: the final norm (and OPT's project_out) and the LM head.

        The LM head is counted even when tied to the embeddings: a last stage on another device
        holds its own copy. Use :meth:`param_count` for the model as stored.
        """
        count = self.vocab_size * self.embed_dim
        if self.final_norm:
            count += self._norm_param_count()
        if self.family == "opt" and self.embed_dim != self.hidden_size:
            count += self.embed_dim * self.hidden_size  # project_out, no bias
        return count

    def embedding_bytes(self) -> int:
        return self.embedding_param_count() * BYTES_16BIT

    def head_bytes(self) -> int:
        return self.head_param_count() * BYTES_16BIT

    def param_count(self) -> int:
        """Parameters as stored (a tied LM head counted once)."""
        tied = self.vocab_size * self.embed_dim if self.tie_word_embeddings else 0
        return (
            self.num_layers * self.layer_param_count()
            + self.embedding_param_count()
            + self.head_param_count()
            - tied
        )

    def weight_bytes(self, bits: int = 16, group_size: int = DEFAULT_GROUP_SIZE) -> int:
        """All weights with every decoder layer at ``bits`` (embeddings and head 16-bit, tied once)."""
        tied = self.vocab_size * self.embed_dim * BYTES_16BIT if self.tie_word_embeddings else 0
        layers = self.num_layers * self.layer_weight_bytes(bits, group_size)
        return layers + self.embedding_bytes() + self.head_bytes() - tied

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError("model", unknown[0], f"use only the keys {sorted(known)}", "is unknown")
        return cls(**data)

    def renamed(self, name: str) -> ModelSpec:
        return replace(self, name=name)

    def to_hf_config_dict(self) -> dict[str, Any]:
        """A ``config.json`` dict that builds a (random-init) HF model of this shape."""
        common = {
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "tie_word_embeddings": self.tie_word_embeddings,
        }
        if self.family == "opt":
            return common | {
                "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads,
                "ffn_dim": self.ffn_dim,
                "max_position_embeddings": self.max_positions,
                "word_embed_proj_dim": self.embed_dim,
                "do_layer_norm_before": self.final_norm,
                "enable_bias": self.qkv_bias,
            }
        if self.family == "bloom":
            return common | {"n_layer": self.num_layers, "n_head": self.num_heads}
        config = common | {
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_dim,
            "max_position_embeddings": self.max_positions,
        }
        if self.model_type == "llama":
            config |= {"attention_bias": self.qkv_bias, "mlp_bias": self.mlp_bias}
        return config

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "") -> ModelSpec:
        """Read the shape from an HF ``config.json`` dict (OPT, BLOOM, LLaMA, Mistral, Qwen2)."""
        model_type = config.get("model_type", "<missing>")
        family = family_of(model_type)
        reader = {"opt": _opt_from_hf, "bloom": _bloom_from_hf, "llama": _llama_from_hf}[family]
        try:
            fields_ = reader(config)
        except KeyError as missing:
            raise UserError(
                f"config.json {missing.args[0]}",
                None,
                f"add it; a {model_type} config needs it",
                problem="is missing",
            ) from None
        return cls(name=name or config.get("_name_or_path", "") or model_type, **fields_)


def _opt_from_hf(c: dict[str, Any]) -> dict[str, Any]:
    h, heads = c.get("hidden_size", 768), c.get("num_attention_heads", 12)
    bias = c.get("enable_bias", True)
    return dict(
        family="opt",
        model_type="opt",
        num_layers=c.get("num_hidden_layers", 12),
        hidden_size=h,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        ffn_dim=c.get("ffn_dim", 3072),
        vocab_size=c.get("vocab_size", 50272),
        max_positions=c.get("max_position_embeddings", 2048),
        embed_dim=c.get("word_embed_proj_dim") or h,
        tie_word_embeddings=c.get("tie_word_embeddings", True),
        qkv_bias=bias,
        out_bias=bias,
        mlp_bias=bias,
        final_norm=c.get("do_layer_norm_before", True)
        and not c.get("_remove_final_layer_norm", False),
    )


def _bloom_from_hf(c: dict[str, Any]) -> dict[str, Any]:
    h = c.get("hidden_size", c.get("n_embed", 64))
    heads = c.get("n_head", c.get("num_attention_heads", 8))
    return dict(
        family="bloom",
        model_type="bloom",
        num_layers=c.get("n_layer", c.get("num_hidden_layers", 2)),
        hidden_size=h,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=h // heads,
        ffn_dim=4 * h,
        vocab_size=c.get("vocab_size", 250880),
        max_positions=c.get("seq_length", 2048),  # alibi: no learned limit; the training length
        embed_dim=h,
        tie_word_embeddings=c.get("tie_word_embeddings", True),
        qkv_bias=True,
        out_bias=True,
        mlp_bias=True,
    )


def _llama_from_hf(c: dict[str, Any]) -> dict[str, Any]:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    model_type = c["model_type"]
    attention_bias = c.get("attention_bias", False)
    return dict(
        family="llama",
        model_type=model_type,
        num_layers=c["num_hidden_layers"],
        hidden_size=h,
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or h // heads,
        ffn_dim=c["intermediate_size"],
        vocab_size=c["vocab_size"],
        max_positions=c.get("max_position_embeddings", 4096),
        embed_dim=h,
        tie_word_embeddings=c.get("tie_word_embeddings", False),
        qkv_bias=True if model_type == "qwen2" else attention_bias,
        out_bias=False if model_type == "qwen2" else attention_bias,
        mlp_bias=c.get("mlp_bias", False),
    )


def _opt(name: str, layers: int, hidden: int, heads: int, embed_dim: int = 0) -> ModelSpec:
    return ModelSpec(
        name=name, family="opt", model_type="opt", num_layers=layers, hidden_size=hidden,
        num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, ffn_dim=4 * hidden,
        vocab_size=50272, max_positions=2048, embed_dim=embed_dim or hidden,
        tie_word_embeddings=True, qkv_bias=True, out_bias=True, mlp_bias=True,
        final_norm=not embed_dim,
    )  # fmt: skip


def _bloom(name: str, layers: int, hidden: int, heads: int) -> ModelSpec:
    return ModelSpec(
        name=name, family="bloom", model_type="bloom", num_layers=layers, hidden_size=hidden,
        num_heads=heads, num_kv_heads=heads, head_dim=hidden // heads, ffn_dim=4 * hidden,
        vocab_size=250880, max_positions=2048, embed_dim=hidden, tie_word_embeddings=True,
        qkv_bias=True, out_bias=True, mlp_bias=True,
    )  # fmt: skip


def _llama(
    name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int,
    max_positions: int, model_type: str = "llama",
) -> ModelSpec:  # fmt: skip
    return ModelSpec(
        name=name, family="llama", model_type=model_type, num_layers=layers, hidden_size=hidden,
        num_heads=heads, num_kv_heads=kv_heads, head_dim=hidden // heads, ffn_dim=ffn,
        vocab_size=vocab, max_positions=max_positions, embed_dim=hidden,
        tie_word_embeddings=False, qkv_bias=model_type == "qwen2", out_bias=False, mlp_bias=False,
    )  # fmt: skip


# Shapes from the models' published config.json files.
NAMED_SHAPES: MappingProxyType[str, ModelSpec] = MappingProxyType(
    {
        s.name: s
        for s in (
            _opt("opt-125m", 12, 768, 12),
            _opt("opt-350m", 24, 1024, 16, embed_dim=512),
            _opt("opt-1.3b", 24, 2048, 32),
            _opt("opt-2.7b", 32, 2560, 32),
            _opt("opt-6.7b", 32, 4096, 32),
            _opt("opt-13b", 40, 5120, 40),
            _opt("opt-30b", 48, 7168, 56),
            _opt("opt-66b", 64, 9216, 72),
            _opt("opt-175b", 96, 12288, 96),
            _bloom("bloom-560m", 24, 1024, 16),
            _bloom("bloom-1b1", 24, 1536, 16),
            _bloom("bloom-1b7", 24, 2048, 16),
            _bloom("bloom-3b", 30, 2560, 32),
            _bloom("bloom-7b1", 30, 4096, 32),
            _bloom("bloom-176b", 70, 14336, 112),
            _llama("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096),
            _llama("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 4096),
            _llama("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, 4096),
            _llama("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192),
            _llama("llama-3-70b", 80, 8192, 64, 8, 28672, 128256, 8192),
            _llama("mistral-7b", 32, 4096, 32, 8, 14336, 32000, 32768, "mistral"),
            _llama("qwen2-7b", 28, 3584, 28, 4, 18944, 152064, 32768, "qwen2"),
        )
    }
)


def model_spec(model: str | Path) -> ModelSpec:
    """The shape of ``model``: a local HF checkpoint directory or a built-in shape name."""
    path = Path(model)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise UserError(
                "--model",
                str(model),
                "point it at a directory saved with save_pretrained (it needs config.json)",
                problem="has no config.json",
            )
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise UserError(
                str(config_file), f"line {err.lineno}", "fix the JSON", "is not valid JSON"
            ) from None
        return ModelSpec.from_hf_config(config, name=path.name)
    if str(model) in NAMED_SHAPES:
        return NAMED_SHAPES[str(model)]
    raise UserError(
        "--model",
        str(model),
        f"give a local HF checkpoint directory or a shape name ({', '.join(NAMED_SHAPES)})",
        problem="is neither a directory nor a known model shape",
    )
