"""The Hessian indicator: the second-order (Fisher) estimate of the loss increase a layer's rounding causes.

Usage::

    from llmpq.indicator.hessian import fisher_diagonal, fisher_omega

    fisher = fisher_diagonal(model, samples.windows)   # (layer, name) -> [N, K] E[g²] x tokens
    values = fisher_omega(model, fisher)               # [L, 4] over bits (3, 4, 8, 16)
    values = hessian_values(model, samples.windows)    # both steps in one

Derivation. Near a trained minimum the mean next-token cross-entropy grows, to second order, by
``½ Δwᵀ H Δw`` when the weights move by ``Δw``; the Hessian ``H`` of the cross-entropy equals
the Fisher information ``F = E[g gᵀ]`` of the model's own predictions, and its diagonal is the
usual tractable approximation (as in HAWQ, or Fisher-weighted pruning). With ``Δw`` the RTN
error the quantizer actually makes at ``b`` bits::

    ω(layer, b) = ½ Σ_linears Σ_{n,k} F_nk · (w_nk − Q_b(w)_nk)²     [nats per token]

``F`` is the empirical Fisher from one gradient per calibration window: the window's mean
gradient ``ḡ`` has ``E[ḡ²] ≈ F_token / T`` for T tokens of roughly independent gradients, so
``F_token ≈ T · mean_windows(ḡ²)``. Unlike the variance indicator, this weighs each weight by
how much the *loss* depends on it, so it sees that a layer's error is damped or amplified by
the layers after it. Cost: one forward and backward pass per window.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from llmpq.indicator.model import FullModel, quantized_weight
from llmpq.models.spec import DEFAULT_GROUP_SIZE

UNITS = "nats per token (second-order loss increase, diagonal empirical Fisher)"


def fisher_diagonal(model: FullModel, windows: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Per-token diagonal Fisher [N, K] of every quantizable linear, keyed by (layer, name)."""
    linears = {(i, name): lin for i, name, lin in model.linears()}
    sums = {key: torch.zeros_like(lin.weight) for key, lin in linears.items()}
    for lin in linears.values():
        lin.weight.requires_grad_(True)
    try:
        for ids in windows:  # one window at a time: one gradient sample each
            logits = model.forward(ids[None])  # [1, T, V]
            loss = F.cross_entropy(logits[0, :-1].float(), ids[1:])
            grads = torch.autograd.grad(loss, [lin.weight for lin in linears.values()])
            for key, grad in zip(linears, grads, strict=True):
                sums[key] += grad**2
    finally:
        for lin in linears.values():
            lin.weight.requires_grad_(False)
    tokens_per_window = windows.shape[1] - 1  # predictions scored per window
    return {key: s * tokens_per_window / len(windows) for key, s in sums.items()}


def fisher_omega(
    model: FullModel,
    fisher: dict[tuple[int, str], torch.Tensor],
    group_size: int = DEFAULT_GROUP_SIZE,
) -> np.ndarray:
    """ω [num_layers, len(BITS)]: ``½ Σ F ⊙ Δw²`` with Δw the RTN error at each bitwidth."""

    def term(i: int, name: str, w: torch.Tensor, bits: int) -> float:
        error = w - quantized_weight(w, bits, group_size)  # [N, K]
        return 0.5 * float((fisher[i, name].double() * error.double() ** 2).sum())

    return model.sum_over_linears(term)


def hessian_values(model: FullModel, windows: torch.Tensor) -> np.ndarray:
    """ω [L, len(BITS)] from the diagonal Fisher on calibration ``windows`` [W, T]."""
    return fisher_omega(model, fisher_diagonal(model, windows))
