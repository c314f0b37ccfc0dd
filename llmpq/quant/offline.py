"""The offline step: quantize a checkpoint's decoder layers to a bit plan (RTN or GPTQ).

Usage::

    from llmpq.quant import quantize_model

    qmodel = quantize_model("results/models/default", [4, 4, 8, 16, 3, 3])           # RTN
    qmodel = quantize_model(model_dir, bits, method="gptq", group_size=128)         # GPTQ on
    qmodel.save("default-gptq.safetensors")          # the model's data/train.txt (or calib_text)

RTN reads each quantized linear from the checkpoint (fp32 as stored) and rounds it; no forward
pass. GPTQ runs the calibration windows through the model in fp32, one decoder layer at a time:
it records each linear's input Hessian with the layer as it is, quantizes the layer's linears,
and feeds the *quantized* layer's outputs to the next layer (as the GPTQ paper does). Layers at
16 bits are left as they are. The linears quantized are those of ``ModelSpec.layer_linears()``
(the ones the memory model counts); the runtime step is :mod:`llmpq.quant.apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from llmpq.errors import UserError
from llmpq.models.adapters import adapter_for
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import ModelSpec, check_bits
from llmpq.models.stage import PipelineStage, StageRange, StepInputs, load_stage
from llmpq.quant.calibration import DEFAULT_WINDOW_TOKENS, DEFAULT_WINDOWS, calibration_windows
from llmpq.quant.gptq import DEFAULT_DAMP, Hessian, quantize_gptq
from llmpq.quant.rtn import QuantizedWeight, check_quant_args, quantize_rtn
from llmpq.quant.state import METHODS, QuantizedModel, layer_key

CALIBRATION_BATCH = 8  # windows per forward pass while calibrating


def check_bit_plan(
    spec: ModelSpec, bits_per_layer: Sequence[int], group_size: int, method: str
) -> tuple[int, ...]:
    """The plan as a tuple; UserError for a wrong length, bitwidth, group size or method."""
    bits = tuple(bits_per_layer)
    if len(bits) != spec.num_layers:
        raise UserError(
            "bits_per_layer",
            f"{len(bits)} entries",
            f"give one bitwidth per decoder layer ({spec.num_layers} for {spec.name})",
            problem="does not match the model's layer count",
        )
    if method not in METHODS:
        raise UserError("method", method, f"use one of {list(METHODS)}")
    for b in bits:
        check_bits(b)
    for b in sorted(set(bits) - {16}):
        for lin in spec.layer_linears():
            check_quant_args(b, group_size, lin.in_features)
    return bits


def quantize_model(
    model_dir: str | Path,
    bits_per_layer: Sequence[int],
    method: str = "rtn",
    group_size: int = 128,
    *,
    calib_text: str | Path | None = None,
    calib_ids: torch.Tensor | None = None,
    calib_windows: int = DEFAULT_WINDOWS,
    calib_window_tokens: int = DEFAULT_WINDOW_TOKENS,
    damp: float = DEFAULT_DAMP,
) -> QuantizedModel:
    """Quantize every decoder layer of the checkpoint below 16 bits; see the module docstring.

    GPTQ calibrates on ``calib_windows`` windows of ``calib_window_tokens`` tokens (at most the
    model's positions) of ``calib_text`` (default: the model's ``data/train.txt``), or on the
    token windows ``calib_ids`` [W, T] if given; it dampens the Hessian by ``damp`` times its
    mean diagonal.
    """
    ckpt = Checkpoint(Path(model_dir))
    spec = ModelSpec.from_hf_config(ckpt.config_dict(), name=Path(model_dir).name)
    bits = check_bit_plan(spec, bits_per_layer, group_size, method)
    if method == "rtn" or all(b == 16 for b in bits):
        weights = _rtn(ckpt, spec, bits, group_size)
    else:
        if calib_ids is None:
            window_tokens = min(calib_window_tokens, spec.max_positions)
            calib_ids = calibration_windows(model_dir, calib_text, calib_windows, window_tokens)
        weights = _gptq(ckpt, spec, bits, group_size, calib_ids, damp)
    return QuantizedModel(bits, group_size, method, weights)


def _rtn(
    ckpt: Checkpoint, spec: ModelSpec, bits: tuple[int, ...], group_size: int
) -> dict[str, QuantizedWeight]:
    """Round each quantized layer's linears, read one layer at a time from the checkpoint."""
    prefix = adapter_for(ckpt.config()).LAYER_PREFIX
    weights: dict[str, QuantizedWeight] = {}
    for i, b in enumerate(bits):
        if b == 16:
            continue
        names = {
            lin.name: ckpt.resolve(f"{prefix}{i}.{lin.name}.weight") for lin in spec.layer_linears()
        }
        stored = ckpt.read(names.values())
        for name, key in names.items():
            weights[layer_key(i, name)] = quantize_rtn(stored[key].float(), b, group_size)
    return weights


def _layer_inputs(stage: PipelineStage, windows: torch.Tensor) -> list[tuple[torch.Tensor, list]]:
    """(hidden [B, T, H], per-layer kwargs) of each calibration batch after the embeddings."""
    batches = []
    for ids in windows.split(CALIBRATION_BATCH):  # [B, T]
        step = StepInputs.from_mask(torch.ones_like(ids), ids.shape[1])
        hidden = stage.embed(ids, step)
        batches.append((hidden, stage.extras(hidden, step, None, stage.stage_range.layer_ids)))
    return batches


def _input_hessians(
    linears: dict[str, nn.Linear], forward_passes: Iterator[object]
) -> dict[str, Hessian]:
    """The input Hessian of every linear, over the batches ``forward_passes`` runs one by one.

    Linears fed the same tensor (q/k/v, gate/up) share one accumulation.
    """
    seen: dict[str, torch.Tensor] = {}  # linear -> its input in the current batch
    hooks = [
        lin.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[0]))
        for name, lin in linears.items()
    ]
    hessians: dict[str, Hessian] = {}
    try:
        for _ in forward_passes:
            by_input: dict[tuple, Hessian] = {}
            for name, x in seen.items():
                key = (x.data_ptr(), tuple(x.shape))
                if name not in hessians:
                    hessians[name] = by_input.get(key) or Hessian(x.shape[-1])
                if key not in by_input:
                    by_input[key] = hessians[name]
                    hessians[name].add(x)
            seen.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return hessians


@torch.no_grad()
def _gptq(
    ckpt: Checkpoint,
    spec: ModelSpec,
    bits: tuple[int, ...],
    group_size: int,
    windows: torch.Tensor,
    damp: float,
) -> dict[str, QuantizedWeight]:
    """GPTQ layer by layer through an fp32 copy of the decoder (see the module docstring)."""
    stage = load_stage(ckpt, StageRange.of(0, spec.num_layers, spec.num_layers))
    run_layer = stage.adapter.run_layer
    batches = _layer_inputs(stage, windows)
    weights: dict[str, QuantizedWeight] = {}
    for i, (layer, b) in enumerate(zip(stage.layers, bits, strict=True)):
        if b != 16:
            linears = {lin.name: layer.get_submodule(lin.name) for lin in spec.layer_linears()}
            hessians = _input_hessians(linears, _forward(run_layer, layer, i, batches))
            for name, lin in linears.items():
                qw = quantize_gptq(lin.weight, hessians[name].matrix(), b, group_size, damp=damp)
                weights[layer_key(i, name)] = qw
                lin.weight.copy_(qw.dequantize())  # later layers see this layer quantized
        outputs = _forward(run_layer, layer, i, batches)
        batches = [(out, kwargs) for out, (_, kwargs) in zip(outputs, batches, strict=True)]
    return weights


def _forward(
    run_layer: Callable, layer: nn.Module, i: int, batches: list[tuple[torch.Tensor, list]]
) -> Iterator[torch.Tensor]:
    """Layer ``i``'s output for each calibration batch, computed as it is asked for."""
    for hidden, kwargs in batches:
        yield run_layer(layer, hidden, kwargs[i])
