"""The runtime step: swap a pipeline stage's ``nn.Linear`` modules for quantized ones.

Usage::

    qmodel = QuantizedModel.load("default-gptq.safetensors", layers=stage_range.layer_ids)
    stage = load_quantized_stage("results/models/default", stage_range, qmodel)   # bf16 on CPU
    # or, for a stage already built (16-bit) by load_stage / stage_from_model:
    apply_quantized(stage, qmodel)                   # the offline artefact's weights (RTN or GPTQ)
    quantize_stage(stage, [4, 4, 8, 16, 3, 3])       # on the fly: RTN from the stage's own weights

A layer at 16 bits keeps its ``nn.Linear`` (bf16 on CPU, fp16 on CUDA: :func:`sixteen_bit_dtype`);
the others get :class:`llmpq.quant.linear.QuantLinear` modules on the device of the linear they
replace, taking over its bias. Embeddings, norms and the LM head stay 16-bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec
from llmpq.models.stage import PipelineStage, StageRange, load_stage
from llmpq.quant.linear import quant_linear
from llmpq.quant.offline import check_bit_plan
from llmpq.quant.rtn import QuantizedWeight, quantize_rtn
from llmpq.quant.state import QuantizedModel


def sixteen_bit_dtype(device: torch.device | str) -> torch.dtype:
    """The 16-bit dtype of unquantized weights: bf16 on CPU (AVX512-BF16), fp16 on CUDA."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def _stage_spec(stage: PipelineStage) -> ModelSpec:
    return ModelSpec.from_hf_config(stage.config.to_dict())


def _check_layer_count(stage: PipelineStage, bits_per_layer: Sequence[int]) -> None:
    num_layers = stage.config.num_hidden_layers
    if len(bits_per_layer) != num_layers:
        raise UserError(
            "bits_per_layer",
            f"{len(bits_per_layer)} entries",
            f"give one bitwidth per decoder layer of the model ({num_layers})",
            problem="does not match the model's layer count",
        )


def _swap(layer: nn.Module, name: str, qw: QuantizedWeight) -> None:
    """Replace ``layer.<name>`` (an nn.Linear) by the quantized module of ``qw``."""
    parent_name, _, attr = name.rpartition(".")
    parent = layer.get_submodule(parent_name)
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{name} is a {type(old).__name__}, not an nn.Linear (quantized twice?)")
    if tuple(old.weight.shape) != (qw.out_features, qw.in_features):
        raise UserError(
            "quantized weights",
            f"{name} [{qw.out_features}, {qw.in_features}]",
            "quantize this model's own checkpoint",
            problem=f"do not fit the model's {name} {list(old.weight.shape)}",
        )
    setattr(parent, attr, quant_linear(qw, old.bias, old.weight.device))


def apply_quantized(stage: PipelineStage, qmodel: QuantizedModel) -> PipelineStage:
    """Swap the linears of the stage's quantized layers for those of ``qmodel`` (in place)."""
    _check_layer_count(stage, qmodel.bits_per_layer)
    expected = {lin.name for lin in _stage_spec(stage).layer_linears()}
    for layer, i in zip(stage.layers, stage.stage_range.layer_ids, strict=True):
        weights = qmodel.layer_weights(i)
        if qmodel.bits_per_layer[i] != 16 and set(weights) != expected:
            raise UserError(
                "quantized weights",
                f"layer {i}",
                "load the file with every layer of the stage (QuantizedModel.load(path, layers=...))",
                problem=f"hold {sorted(weights)}, not {sorted(expected)}",
            )
        for name, qw in weights.items():
            _swap(layer, name, qw)
    return stage


def quantize_stage(
    stage: PipelineStage, bits_per_layer: Sequence[int], group_size: int = 128
) -> PipelineStage:
    """RTN-quantize the stage's layers in place from its own weights (one bitwidth per model layer)."""
    spec = _stage_spec(stage)
    bits = check_bit_plan(spec, bits_per_layer, group_size, "rtn")
    for layer, i in zip(stage.layers, stage.stage_range.layer_ids, strict=True):
        if bits[i] == 16:
            continue
        for lin in spec.layer_linears():
            weight = layer.get_submodule(lin.name).weight.float()
            _swap(layer, lin.name, quantize_rtn(weight, bits[i], group_size))
    return stage


def load_quantized_stage(
    model_dir: str | Path | Checkpoint,
    stage_range: StageRange,
    qmodel: QuantizedModel,
    device: torch.device | str = "cpu",
) -> PipelineStage:
    """``load_stage`` at the device's 16-bit dtype, then :func:`apply_quantized`.

    The stage's 16-bit weights are read first and the quantized layers' linears then replaced,
    so loading peaks at the stage's 16-bit size.
    """
    stage = load_stage(model_dir, stage_range, dtype=sixteen_bit_dtype(device), device=device)
    return apply_quantized(stage, qmodel)
