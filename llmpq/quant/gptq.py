"""GPTQ: quantize a weight column by column, spreading each column's error over the columns left.

Usage::

    hessian = Hessian(in_features=K)
    hessian.add(x)                                   # x: [..., K], inputs the linear sees
    qw = quantize_gptq(w, hessian.matrix(), bits=4, group_size=128)   # QuantizedWeight

The algorithm of Frantar et al. (2023), "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", Algorithm 1 with lazy batch updates: with
``H = 2 X^T X / n`` (dampened by ``damp`` times its mean diagonal) and the upper Cholesky factor
``U`` of ``H^-1``, column ``i`` is rounded to the grid and its error ``(w_i - q_i) / U_ii``
is removed from the later columns through row ``i`` of ``U``. Grids are those of
:mod:`llmpq.quant.rtn` (same codes, scales and zeros, same 16-bit rounding).

Columns are visited in *act order* (by decreasing Hessian diagonal: the inputs with the most
energy first, while the most columns are left to absorb their error), with *static groups*:
every group's scale and zero are fixed from the weights before the sweep, so the stored layout
stays contiguous groups in natural input order (what the kernels read; no ``g_idx``). On
SmolLM2-135M at 4 bits this halves RTN's perplexity increase where natural order with groups set
as the sweep reaches them did not (``bench/quant_kernels.py``); ``act_order=False`` is that order.
"""

from __future__ import annotations

import torch

from llmpq.errors import UserError
from llmpq.models.spec import group_size_for
from llmpq.quant.rtn import (
    QUANT_BITS,
    QuantizedWeight,
    check_quant_args,
    grid_params,
    mid_code,
)

DEFAULT_DAMP = 0.01  # fraction of mean(diag H) added to the diagonal (the GPTQ default)
BLOCK_COLUMNS = 128  # lazy-update block; a multiple of every group size up to 128


class Hessian:
    """Running ``2 X^T X / n`` of a linear's inputs, in float32 (as the GPTQ reference does)."""

    def __init__(self, in_features: int) -> None:
        self.sum = torch.zeros(in_features, in_features)  # [K, K]
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Accumulate inputs ``x`` [..., K] (every row one token)."""
        rows = x.detach().reshape(-1, x.shape[-1]).float().cpu()  # [n, K]
        self.sum.addmm_(rows.T, rows)
        self.count += rows.shape[0]

    def matrix(self) -> torch.Tensor:
        """``2 X^T X / n`` [K, K]."""
        if self.count == 0:
            raise UserError("calibration tokens", 0, "give calibration text", problem="is empty")
        return 2 * self.sum / self.count


def _inverse_cholesky(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of the dampened inverse Hessian [K, K]."""
    h = hessian.double().clone()
    h += damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).float()


def quantize_gptq(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int = 128,
    dtype: torch.dtype = torch.bfloat16,
    damp: float = DEFAULT_DAMP,
    act_order: bool = True,
) -> QuantizedWeight:
    """GPTQ quantization of ``w`` [N, K] given the input Hessian [K, K]; see the module docstring."""
    if bits not in QUANT_BITS:
        raise UserError("bits", bits, f"quantize to one of {list(QUANT_BITS)} (16 needs none)")
    n, k = w.shape
    check_quant_args(bits, group_size, k)
    if bits != 8:
        group_size = group_size_for(k, group_size)  # the largest allowed that divides K
    w = w.detach().float().clone()  # [N, K], updated in place as the sweep goes
    hessian = hessian.float().clone()
    dead = hessian.diagonal() == 0  # inputs never seen: any value is as good
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    if bits == 8:
        scales, _ = grid_params(w, bits, dtype)  # [N]: one symmetric scale per row, fixed
        zeros = None
    else:
        grouped = w.reshape(n, k // group_size, group_size)  # [N, G, g]
        scales, zeros = grid_params(grouped, bits, dtype)  # static: from the weights, pre-sweep
        scales, zeros = scales.reshape(n, -1), zeros.reshape(n, -1)  # [N, G]
    order = torch.argsort(hessian.diagonal(), descending=True) if act_order else torch.arange(k)
    w, hessian = w[:, order], hessian[order][:, order]  # sweep in ``order``
    # each swept column's scale and zero, float32 [N, K] in sweep order: the grid of
    # ``rtn.grid_codes`` / ``rtn.grid_values`` written out per column (the same float32 steps,
    # so the same codes), without two function calls and their casts per column
    if bits == 8:
        col_scale = scales.float()[:, None].expand(n, k)
        col_zero = torch.zeros(()).expand(n, k)  # a view: no [N, K] buffer of zeros
        mid, lo, hi = 0.0, -128.0, 127.0
    else:
        col_group = (order // group_size)[None, :].expand(n, k)  # [N, K]
        col_scale = scales.float().gather(1, col_group)
        col_zero = zeros.float().gather(1, col_group)
        mid, lo, hi = float(mid_code(bits)), 0.0, float(2**bits - 1)
    swept = torch.empty(n, k)  # codes as floats, in sweep order
    u = _inverse_cholesky(hessian, damp)  # [K, K] upper
    for start in range(0, k, BLOCK_COLUMNS):
        end = min(start + BLOCK_COLUMNS, k)
        w_block = w[:, start:end]  # [N, b], a view: updated in place
        err_block = torch.empty_like(w_block)  # [N, b]
        u_block = u[start:end, start:end]  # [b, b]
        s_block, z_block = col_scale[:, start:end], col_zero[:, start:end]
        for i in range(end - start):
            column, scale, zero = w_block[:, i], s_block[:, i], z_block[:, i]  # [N] each
            if bits == 8:
                q = torch.clamp_((column / scale).round_(), lo, hi)
                q_value = q * scale
            else:
                q = torch.clamp_(((column - zero) / scale).round_() + mid, lo, hi)
                q_value = (q - mid) * scale + zero
            swept[:, start + i] = q
            err = (column - q_value) / u_block[i, i]  # [N]
            w_block[:, i:] -= err[:, None] * u_block[i, i:][None, :]
            err_block[:, i] = err
        w[:, end:] -= err_block @ u[start:end, end:]  # lazy update of the columns left
    codes = torch.empty(n, k, dtype=torch.int8 if bits == 8 else torch.uint8)
    codes[:, order] = swept.to(codes.dtype)  # back to the stored (natural) input order
    return QuantizedWeight(bits, group_size if bits != 8 else k, codes, scales, zeros)
