"""The full-precision model the measured indicators look at, and how they perturb it.

Usage::

    from llmpq.indicator.model import FullModel

    model = FullModel.load("results/models/default")   # fp32, all layers, one stage
    model.spec, model.stage                             # ModelSpec, PipelineStage
    model.linear(3, "mlp.down_proj")                    # nn.Linear of layer 3
    model.sum_over_linears(term)   # [L, 4]: Σ over each layer's linears of term(layer, name, w, bits)
    logits = model.logits(windows)                      # [W, T, V] (no grad), in batches
    w_hat = quantized_weight(w, bits=4)                 # [N, K] fp32: what the runtime multiplies by

Every indicator is computed on the fp32 checkpoint as stored (the 16-bit reference differs
from it by far less than any quantized layer does), and quantization is simulated with the very
quantizer ``llmpq ppl`` applies by default: RTN with 128-wide groups at 3/4 bits, symmetric per
channel at 8 bits (:func:`llmpq.quant.rtn.quantize_rtn`), dequantized to fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmpq.indicator.array import BITS
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.spec import DEFAULT_GROUP_SIZE, ModelSpec
from llmpq.models.stage import PipelineStage, StageRange, StepInputs, load_stage
from llmpq.quant.rtn import quantize_rtn

FORWARD_BATCH = 8  # windows per forward pass


def quantized_weight(
    w: torch.Tensor, bits: int, group_size: int = DEFAULT_GROUP_SIZE
) -> torch.Tensor:
    """fp32 [N, K] values of ``w`` [N, K] after RTN at ``bits`` (16: ``w`` itself, as fp32)."""
    if bits == 16:
        return w.detach().float()
    return quantize_rtn(w.detach().float(), bits, group_size).dequantize()


@dataclass(frozen=True, eq=False)
class FullModel:
    """A checkpoint loaded in fp32 as one pipeline stage (embeddings, every layer, head)."""

    spec: ModelSpec
    stage: PipelineStage

    @classmethod
    def load(cls, model_dir: str | Path) -> FullModel:
        ckpt = Checkpoint(Path(model_dir))
        spec = ModelSpec.from_hf_config(ckpt.config_dict(), name=Path(model_dir).name)
        stage = load_stage(ckpt, StageRange.of(0, spec.num_layers, spec.num_layers))
        stage.requires_grad_(False)
        return cls(spec, stage)

    def linear(self, layer: int, name: str) -> nn.Linear:
        return self.stage.layers[layer].get_submodule(name)

    def linears(self) -> Iterator[tuple[int, str, nn.Linear]]:
        """(layer, name, module) of every quantizable linear, layer by layer."""
        for i in range(self.spec.num_layers):
            for lin in self.spec.layer_linears():
                yield i, lin.name, self.linear(i, lin.name)

    def sum_over_linears(self, term: Callable[[int, str, torch.Tensor, int], float]) -> np.ndarray:
        """ω [num_layers, len(BITS)]: ``term(layer, name, w [N, K] fp32, bits)`` summed over each
        layer's linears, for every bitwidth below 16 (the 16-bit column stays 0)."""
        values = np.zeros((self.spec.num_layers, len(BITS)))
        for i, name, lin in self.linears():
            w = lin.weight.detach().float()  # [N, K]
            for j, b in enumerate(BITS):
                if b != 16:
                    values[i, j] += term(i, name, w, b)
        return values

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] of unpadded windows ``ids`` [B, T] (gradients as the caller allows)."""
        return self.stage(ids, StepInputs.from_mask(torch.ones_like(ids), ids.shape[1]))

    @torch.no_grad()
    def logits(self, windows: torch.Tensor) -> torch.Tensor:
        """Logits [W, T, V] of the windows, run ``FORWARD_BATCH`` at a time."""
        return torch.cat([self.forward(ids) for ids in windows.split(FORWARD_BATCH)])
