"""The output-error indicator: measured KL of the final next-token distribution, one layer quantized at a time.

Usage::

    from llmpq.indicator.output_error import mean_kl, output_error_omega

    values = output_error_omega(model, samples.windows)   # [L, 4] over bits (3, 4, 8, 16)
    mean_kl(logits_ref, logits_ref)                        # 0.0: identical distributions

For each layer ``l`` and each ``b`` in 3, 4, 8: quantize layer ``l``'s linears alone to ``b``
bits (RTN, as ``llmpq ppl`` does), run the calibration windows, and record
``KL(p_16 ‖ p_q)`` of the next-token distributions, averaged over every position::

    ω(l, b) = mean_tokens Σ_v p_16(v) · (log p_16(v) − log p_q(v))     [nats per token]

At 16 bits the layer is the reference itself: ω = 0. It measures the real end-to-end damage
(error propagation included) of one layer at a time, so it is the most direct of the
indicators and the most expensive: ``3 L`` forward passes of the sample. The hidden states
entering each layer are computed once and reused, so each pass starts at the quantized layer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmpq.indicator.array import BITS
from llmpq.indicator.model import FORWARD_BATCH, FullModel, quantized_weight
from llmpq.models.spec import DEFAULT_GROUP_SIZE
from llmpq.models.stage import StepInputs

UNITS = "nats per token (KL of the next-token distribution from the 16-bit model's)"


def mean_kl(logits_ref: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over positions of ``KL(softmax(logits_ref) ‖ softmax(logits))``; logits [..., V]."""
    log_p = F.log_softmax(logits_ref.double(), -1)
    log_q = F.log_softmax(logits.double(), -1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


class _Runner:
    """The windows' hidden states entering every layer, and the logits from any layer onward."""

    def __init__(self, model: FullModel, windows: torch.Tensor) -> None:
        self.model = model
        stage = model.stage
        self.batches = []  # per batch: (hidden entering each layer [L] x [B, T, H], kwargs)
        for ids in windows.split(FORWARD_BATCH):
            step = StepInputs.from_mask(torch.ones_like(ids), ids.shape[1])
            hidden = stage.embed(ids, step)  # [B, T, H]
            kwargs = stage.extras(hidden, step, None, stage.stage_range.layer_ids)
            inputs = []
            for layer, layer_kwargs in zip(stage.layers, kwargs, strict=True):
                inputs.append(hidden)
                hidden = stage.adapter.run_layer(layer, hidden, layer_kwargs)
            self.batches.append((inputs, kwargs))

    def logits_from(self, start: int) -> torch.Tensor:
        """Logits [W, T, V] running layers ``start..L-1`` on the stored inputs of ``start``."""
        stage = self.model.stage
        out = []
        for inputs, kwargs in self.batches:
            hidden = inputs[start]
            for i in range(start, len(stage.layers)):
                hidden = stage.adapter.run_layer(stage.layers[i], hidden, kwargs[i])
            out.append(stage.head(hidden))
        return torch.cat(out)


@torch.no_grad()
def output_error_omega(
    model: FullModel, windows: torch.Tensor, group_size: int = DEFAULT_GROUP_SIZE
) -> np.ndarray:
    """ω [num_layers, len(BITS)]: measured mean KL with one layer at a time quantized."""
    runner = _Runner(model, windows)
    reference = runner.logits_from(0)  # [W, T, V]
    values = np.zeros((model.spec.num_layers, len(BITS)))
    linears = [lin.name for lin in model.spec.layer_linears()]
    for i in range(model.spec.num_layers):
        originals = {name: model.linear(i, name).weight.detach().clone() for name in linears}
        try:
            for j, b in enumerate(BITS):
                if b == 16:
                    continue
                for name, w in originals.items():
                    model.linear(i, name).weight.copy_(quantized_weight(w, b, group_size))
                values[i, j] = max(mean_kl(reference, runner.logits_from(i)), 0.0)
        finally:
            for name, w in originals.items():
                model.linear(i, name).weight.copy_(w)
    return values
