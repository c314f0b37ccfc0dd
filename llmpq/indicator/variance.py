"""The variance indicator: rounding-noise power of each linear's output, from the real quantizer's step.

Usage::

    from llmpq.indicator.variance import input_stats, variance_omega

    stats = input_stats(model, samples.windows)         # per linear: E[x_k^2] [K], mean var_k(x)
    values = variance_omega(model, stats)               # [L, 4] over bits (3, 4, 8, 16)
    values = variance_omega(model, stats, paper=True)   # LLM-PQ's original formula
    values = variance_values(model, samples.windows)    # both steps in one

Derivation. RTN rounds each weight to a grid of step ``s``; the error ``e`` is close to uniform
on ``[-s/2, s/2]``, variance ``s²/12``, and independent of the input. Output ``n`` of
``y = W x`` then errs by ``Σ_k e_nk x_k``, whose mean square over tokens is
``Σ_k s_nk²/12 · E[x_k²]``. Summed over the outputs of the layer's linears::

    ω(layer, b) = Σ_linears Σ_n Σ_k s_{n,g(k)}(b)² / 12 · E[x_k²]

with the step the quantizer actually uses (:func:`llmpq.quant.rtn.grid_params`, 16-bit rounded):
``(max − min) / (2^b − 1)`` of each (row, 128-input group) at 3/4 bits, ``max|w| / 127`` of each
row at 8 bits. ``E[x_k²]`` is each input channel's second moment on the calibration text.

LLM-PQ's original (paper spec §5.1, ``paper=True``) instead takes one per-tensor step,
``max_row(max − min) / (2^(b−1) − 1)``, times the input's variance across the hidden dimension
averaged over tokens, times 4 for the FFN linears. One step per tensor lets a single outlier row
set every row's error, and the variance across channels ignores which channels are large, so
the per-group, per-channel form above follows the quantizer's actual error much more closely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llmpq.indicator.model import FORWARD_BATCH, FullModel
from llmpq.models.spec import DEFAULT_GROUP_SIZE, group_size_for
from llmpq.quant.rtn import grid_params

UNITS = "squared output error per token, summed over the layer's linear outputs"
PAPER_UNITS = "squared per-tensor step x mean input variance (LLM-PQ's formula)"


@dataclass(frozen=True, eq=False)
class InputStats:
    """What one linear's inputs looked like on the calibration text."""

    second_moment: torch.Tensor  # [K] E[x_k^2] over tokens
    mean_variance: float  # mean over tokens of the variance across the K inputs


class _Accumulator:
    def __init__(self) -> None:
        self.sum_sq: torch.Tensor | float = 0.0  # [K]
        self.sum_var = 0.0
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).double()  # [n, K]
        self.sum_sq = self.sum_sq + (rows**2).sum(0)
        self.sum_var += rows.var(-1, unbiased=False).sum().item()
        self.tokens += rows.shape[0]

    def stats(self) -> InputStats:
        return InputStats(self.sum_sq / self.tokens, self.sum_var / self.tokens)


@torch.no_grad()
def input_stats(model: FullModel, windows: torch.Tensor) -> dict[tuple[int, str], InputStats]:
    """Input statistics of every quantizable linear, keyed by (layer, name), over ``windows`` [W, T]."""
    accumulators = {(i, name): _Accumulator() for i, name, _ in model.linears()}
    hooks = [
        lin.register_forward_hook(lambda m, args, out, acc=accumulators[i, name]: acc.add(args[0]))
        for i, name, lin in model.linears()
    ]
    try:
        for ids in windows.split(FORWARD_BATCH):
            model.forward(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return {key: acc.stats() for key, acc in accumulators.items()}


def noise_power(w: torch.Tensor, bits: int, second_moment: torch.Tensor, group_size: int) -> float:
    """``Σ_n Σ_k s_{n,g(k)}² / 12 · E[x_k²]`` for ``w`` [N, K] at ``bits`` (0 at 16)."""
    if bits == 16:
        return 0.0
    m2 = second_moment.double()  # [K]
    n, k = w.shape
    if bits == 8:
        scale, _ = grid_params(w, bits)  # [N]: one step per row
        return float((scale.double() ** 2).sum() * m2.sum() / 12)
    group_size = group_size_for(k, group_size) or k  # per linear, as RTN and GPTQ choose it
    scale, _ = grid_params(w.float().reshape(n, k // group_size, group_size), bits)  # [N, G]
    group_m2 = m2.view(k // group_size, group_size).sum(-1)  # [G]
    return float((scale.double() ** 2 * group_m2).sum() / 12)


def paper_noise_power(w: torch.Tensor, bits: int, mean_variance: float, is_ffn: bool) -> float:
    """LLM-PQ's ``s_w² · x_var`` (× 4 for FFN), one per-tensor step (module docstring)."""
    if bits == 16:
        return 0.0
    step = (w.amax(1) - w.amin(1)).max().item() / (2 ** (bits - 1) - 1)
    return step**2 * mean_variance * (4 if is_ffn else 1)


def is_ffn(name: str) -> bool:
    """Whether a linear (named as in ``ModelSpec.layer_linears``) belongs to the FFN."""
    return "attn" not in name and "attention" not in name


def variance_omega(
    model: FullModel,
    stats: dict[tuple[int, str], InputStats],
    *,
    paper: bool = False,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> np.ndarray:
    """ω [num_layers, len(BITS)]: the quantizer-step form, or LLM-PQ's with ``paper``."""

    def term(i: int, name: str, w: torch.Tensor, bits: int) -> float:
        if paper:
            return paper_noise_power(w, bits, stats[i, name].mean_variance, is_ffn(name))
        return noise_power(w, bits, stats[i, name].second_moment, group_size)

    return model.sum_over_linears(term)


def variance_values(model: FullModel, windows: torch.Tensor) -> np.ndarray:
    """ω [L, len(BITS)] of the quantizer-step form on calibration ``windows`` [W, T]."""
    return variance_omega(model, input_stats(model, windows))


def paper_variance_values(model: FullModel, windows: torch.Tensor) -> np.ndarray:
    """ω [L, len(BITS)] of LLM-PQ's original formula on calibration ``windows`` [W, T]."""
    return variance_omega(model, input_stats(model, windows), paper=True)
