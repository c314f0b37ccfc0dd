"""Round-to-nearest weight quantization, and the quantized-weight record every method produces.

Usage::

    qw = quantize_rtn(w, bits=4, group_size=128)   # w: [N, K] float -> QuantizedWeight
    w_hat = qw.dequantize()                         # [N, K] float32: what the kernels multiply by
    check_quant_args(bits=3, group_size=128, in_features=4096)   # UserError on bad input

The grids (shared with :mod:`llmpq.quant.gptq`):

* 8 bits, per output channel, symmetric: ``w ≈ q * scale``, q int8 in -128..127, one scale per
  row (``scale = max|w| / 127``).
* 4 and 3 bits, per (output channel, group of ``group_size`` inputs), asymmetric:
  ``w ≈ (q - mid) * scale + zero``, q in 0..2^bits - 1, ``mid = 2^(bits-1)`` (8 or 4): ``zero``
  is the value of the middle code. At 4 bits this is the convention of
  ``torch._weight_int4pack_mm``; 3-bit codes reach that kernel doubled, ``2q`` with
  ``scale / 2``, which gives the same values (see :mod:`llmpq.quant.packing`). The grid is
  centred on the group's range.

Scales and zeros are rounded to the runtime's 16-bit dtype *before* the codes are chosen, so
the codes are the nearest for the grid the kernels actually use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmpq.errors import UserError
from llmpq.models.spec import GROUP_SIZES, SUPPORTED_BITS, group_size_for

QUANT_BITS = (3, 4, 8)  # bitwidths with a quantized module; 16 stays a 16-bit nn.Linear


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """The codes and grid of one weight matrix ``[N, K]`` (codes unpacked, one per weight)."""

    bits: int  # 3, 4 or 8
    group_size: int  # 3/4 bits: inputs per (scale, zero); 8 bits: K (one scale per row)
    codes: torch.Tensor  # 8 bits: int8 [N, K]; 3/4 bits: uint8 [N, K] in 0..2^bits - 1
    scales: torch.Tensor  # 8 bits: [N]; 3/4 bits: [N, K / group_size]; a 16-bit dtype
    zeros: torch.Tensor | None  # 3/4 bits: [N, K / group_size], the value of code 8; 8: None

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    def dequantize(self) -> torch.Tensor:
        """The weights the grid represents: float32 [N, K]."""
        return grid_values(self.codes, self.scales, self.zeros, self.group_size, self.bits)


def check_quant_args(bits: int, group_size: int, in_features: int | None = None) -> None:
    """UserError unless ``bits`` is supported and ``group_size`` suits the kernels and ``K``."""
    if isinstance(bits, bool) or bits not in SUPPORTED_BITS:
        raise UserError("bits", bits, f"choose one of {list(SUPPORTED_BITS)}")
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise UserError("group_size", group_size, f"choose one of {list(GROUP_SIZES)}")
    if (
        bits in (3, 4)
        and in_features is not None
        and group_size_for(in_features, group_size) is None
    ):
        raise UserError(
            "group_size",
            group_size,
            f"use a model whose linears' input features are multiples of {GROUP_SIZES[0]}",
            problem=f"leaves no group size in {list(GROUP_SIZES)} that divides the input "
            f"features ({in_features})",
        )


def mid_code(bits: int) -> int:
    """3/4 bits: the code whose value is ``zero`` (8 at 4 bits, 4 at 3 bits)."""
    return 2 ** (bits - 1)


def _round_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``scale`` in ``dtype``, never zero; half of it is still a normal number (3-bit kernels)."""
    return scale.to(dtype).clamp_min(2 * torch.finfo(dtype).tiny)


def grid_params(
    w: torch.Tensor, bits: int, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale and zero over the last dim of ``w`` ([..., n] -> [...] each), rounded to ``dtype``.

    8 bits: symmetric (zero None). 3/4 bits: min/max, the grid centred on the range.
    """
    w = w.float()
    if bits == 8:
        return _round_scale(w.abs().amax(-1) / 127, dtype), None
    lo, hi = w.amin(-1), w.amax(-1)  # [...]
    levels = 2**bits - 1
    scale = _round_scale((hi - lo) / levels, dtype)
    # code c has value zero + (c - mid) * scale; put the grid's centre (levels / 2) mid-range
    zero = ((lo + hi) / 2 + (mid_code(bits) - levels / 2) * scale.float()).to(dtype)
    return scale, zero


def grid_codes(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int
) -> torch.Tensor:
    """Nearest codes of ``w`` on the grid; scale/zero broadcast against ``w`` (same shape or [..., 1])."""
    w = w.float()
    if bits == 8:
        return (w / scale.float()).round().clamp(-128, 127).to(torch.int8)
    q = ((w - zero.float()) / scale.float()).round() + mid_code(bits)
    return q.clamp(0, 2**bits - 1).to(torch.uint8)


def grid_values(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int,
    bits: int,
) -> torch.Tensor:
    """float32 [N, K] of codes [N, K] with per-row scales [N] (8 bits) or per-group [N, G]."""
    if zeros is None:
        return codes.float() * scales.float()[:, None]
    n, k = codes.shape
    grouped = codes.float().view(n, k // group_size, group_size)  # [N, G, g]
    values = (grouped - mid_code(bits)) * scales.float()[..., None] + zeros.float()[..., None]
    return values.view(n, k)


def quantize_rtn(
    w: torch.Tensor, bits: int, group_size: int = 128, dtype: torch.dtype = torch.bfloat16
) -> QuantizedWeight:
    """Round-to-nearest quantization of ``w`` [N, K] to ``bits`` (3, 4 or 8)."""
    if bits not in QUANT_BITS:
        raise UserError("bits", bits, f"quantize to one of {list(QUANT_BITS)} (16 needs none)")
    n, k = w.shape
    check_quant_args(bits, group_size, k)
    if bits == 8:
        scale, _ = grid_params(w, bits, dtype)  # [N]
        return QuantizedWeight(bits, k, grid_codes(w, scale[:, None], None, bits), scale, None)
    group_size = group_size_for(k, group_size)  # the largest allowed that divides K
    grouped = w.float().reshape(n, k // group_size, group_size)  # [N, G, g]
    scale, zero = grid_params(grouped, bits, dtype)  # [N, G] each
    codes = grid_codes(grouped, scale[..., None], zero[..., None], bits).view(n, k)
    return QuantizedWeight(bits, group_size, codes, scale, zero)
