"""The ω contract: a ``layer × bits`` DataArray of predicted quantization damage.

Usage::

    from llmpq.indicator.array import BITS, omega_array, plan_omega

    da = omega_array(values, spec, "variance", units="...", seconds=1.2)   # values [L, 4]
    da.sel(layer=3, bits=4).item()          # ω of layer 3 at 4 bits
    plan_omega(da, [4, 4, 8, 16, 3, 3])     # Σω of a bit plan (what the planner bounds)

Every indicator returns such an array: name ``omega``, dims ``("layer", "bits")`` with coords
``layer`` = 0..L-1 and ``bits`` = (3, 4, 8, 16), float64, ω ≥ 0 and ω(·, 16) = 0 (the 16-bit
model is the reference every plan is compared with). Every method but ``random`` is monotone:
fewer bits never predict less damage (:func:`monotone_in_bits` enforces it on measured values,
whose noise could break it by a hair at 8 bits). attrs: ``method``, ``model`` (the shape's
name), ``num_layers``, ``hidden_size``, ``ffn_dim``, ``units``, ``seed``, ``calibration_text``, ``seconds``
(compute time), and the quality calibration when one is attached
(:mod:`llmpq.indicator.calibration`). attrs are str or numbers only, so netCDF stores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from llmpq.errors import UserError
from llmpq.models.spec import SUPPORTED_BITS, ModelSpec

BITS = SUPPORTED_BITS  # (3, 4, 8, 16): the ``bits`` coordinate, ascending
NAME = "omega"
DIMS = ("layer", "bits")


def monotone_in_bits(values: np.ndarray) -> np.ndarray:
    """``values`` [L, len(BITS)] raised so that ω never grows with bits (a running max from 16 down)."""
    return np.maximum.accumulate(values[:, ::-1], axis=1)[:, ::-1]


def omega_array(
    values: np.ndarray,
    spec: ModelSpec,
    method: str,
    *,
    units: str,
    seconds: float,
    seed: int = 0,
    calibration_text: str = "",
) -> xr.DataArray:
    """The contract's DataArray from ``values`` [num_layers, len(BITS)]; the 16-bit column is zeroed."""
    values = np.asarray(values, dtype=np.float64).copy()
    if values.shape != (spec.num_layers, len(BITS)):
        raise ValueError(f"omega values {values.shape}, expected ({spec.num_layers}, {len(BITS)})")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"omega values must be finite and >= 0 ({method})")
    values[:, BITS.index(16)] = 0.0
    return xr.DataArray(
        values,
        dims=DIMS,
        coords={"layer": np.arange(spec.num_layers), "bits": np.asarray(BITS, dtype=np.int64)},
        name=NAME,
        attrs={
            "method": method,
            "model": spec.name,
            "num_layers": spec.num_layers,
            "hidden_size": spec.hidden_size,
            "ffn_dim": spec.ffn_dim,
            "units": units,
            "seed": int(seed),
            "calibration_text": str(calibration_text),
            "seconds": round(float(seconds), 3),
        },
    )


def plan_omega(da: xr.DataArray, bits_per_layer: Sequence[int]) -> float:
    """Σω of a plan: ω(layer, bits) summed over the layers at their bitwidths."""
    bits = [int(b) for b in bits_per_layer]
    if len(bits) != da.sizes["layer"]:
        raise UserError(
            "bits_per_layer",
            f"{len(bits)} entries",
            f"give one bitwidth per layer ({da.sizes['layer']} for {da.attrs.get('model')})",
            problem="does not match the indicator's layer count",
        )
    bad = sorted(set(bits) - set(BITS))
    if bad:
        raise UserError("bits", bad[0], f"choose one of {list(BITS)}")
    table = da.values  # [L, len(BITS)]
    return float(sum(table[i, BITS.index(b)] for i, b in enumerate(bits)))
