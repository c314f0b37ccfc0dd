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
:mod:`llmpq.quant.rtn` (same codes, scales and zeros, same 16-bit rounding); a group's scale and
zero are set when the sweep reaches its first column, from the weights as updated so far. Columns
are visited in natural order (no act-order), so groups stay contiguous for the kernels.
"""

from __future__ import annotations

import torch

from llmpq.errors import UserError
from llmpq.models.spec import group_size_for
from llmpq.quant.rtn import (
    QUANT_BITS,
    QuantizedWeight,
    check_quant_args,
    grid_codes,
    grid_params,
    grid_values,
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
    u = _inverse_cholesky(hessian, damp)  # [K, K] upper
    codes = torch.empty(n, k, dtype=torch.int8 if bits == 8 else torch.uint8)
    if bits == 8:
        scales, _ = grid_params(w, bits, dtype)  # [N]: one symmetric scale per row, fixed
        zeros = None
        col_scale, col_zero = scales, None
    else:
        scales = torch.empty(n, k // group_size, dtype=dtype)  # [N, G]
        zeros = torch.empty(n, k // group_size, dtype=dtype)
    block = max(BLOCK_COLUMNS, group_size)
    for start in range(0, k, block):
        end = min(start + block, k)
        w_block = w[:, start:end]  # [N, b], a view: updated in place
        err_block = torch.empty_like(w_block)  # [N, b]
        u_block = u[start:end, start:end]  # [b, b]
        for i in range(end - start):
            col = start + i
            if bits != 8 and col % group_size == 0:
                g = col // group_size
                scales[:, g], zeros[:, g] = grid_params(w_block[:, i : i + group_size], bits, dtype)
                col_scale, col_zero = scales[:, g], zeros[:, g]
            column = w_block[:, i]  # [N]
            q = grid_codes(column, col_scale, col_zero, bits)  # [N]
            codes[:, col] = q
            q_value = _column_values(q, col_scale, col_zero, bits)
            err = (column - q_value) / u_block[i, i]  # [N]
            w_block[:, i:] -= err[:, None] * u_block[i, i:][None, :]
            err_block[:, i] = err
        w[:, end:] -= err_block @ u[start:end, end:]  # lazy update of the columns left
    return QuantizedWeight(bits, group_size if bits != 8 else k, codes, scales, zeros)


def _column_values(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
) -> torch.Tensor:
    """float32 [N] of one column of codes, through the same formula as the whole matrix."""
    if zero is None:
        return grid_values(q[:, None], scale, None, 1, bits)[:, 0]
    return grid_values(q[:, None], scale[:, None], zero[:, None], 1, bits)[:, 0]
