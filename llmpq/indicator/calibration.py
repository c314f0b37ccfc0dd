"""Quality calibration: Σω of a plan → its perplexity increase, and back to an ω budget.

Usage::

    from llmpq.indicator.calibration import (
        QualityCalibration, attach_calibration, calibration_of, fit_quality_calibration)

    cal = fit_quality_calibration(sum_omega, ppl_increase_pct)   # measured plans, >= 2 points
    cal.ppl_increase_pct(0.8)          # predicted perplexity increase (%) of a plan with Σω = 0.8
    cal.omega_budget(1.0)              # the Σω a plan may have for an increase <= 1 %
    da = attach_calibration(da, cal)   # stored in attrs: it travels in the .nc file
    calibration_of(da)                 # -> QualityCalibration, or None

The functional form, from the data. A plan's perplexity increase is ``exp(ΔCE) − 1`` for the
mean cross-entropy increase ΔCE, and ΔCE is, to first order, the sum of each quantized layer's
own damage: so it is proportional to Σω for an indicator that measures that damage, and zero
at Σω = 0 (the 16-bit reference). The fit is therefore a line through the origin in *log
perplexity*, ``increase_pct = 100 · (exp(slope · Σω / 100) − 1)``: ``slope`` is the increase
per unit Σω near 0, in percent, as in a plain line (on the default model every random plan stays
below a 3 % increase, where the two differ by under 1.5 % of the value), and the exponential
keeps it right on real weights, where a plan with a few 3-bit layers of SmolLM2-135M doubles the
perplexity and a line in percent misses both ends (``intercept_pct`` is 0; a line with an
intercept predicts a non-zero increase for the 16-bit model and did not predict held-out plans
better in ``bench/indicator_quality.py``). The slope minimises the *relative* squared error of
``z = log(1 + increase / 100)``, the quantity a "≤ ε %" target cares about:
``slope = 100 · Σ(x/z) / Σ(x²/z²)``, where points below ``NOISE_FLOOR_PCT`` (an all-8-bit plan's
measured change, bf16 noise) count at that floor, so noise-level plans cannot dominate.
``mape_pct`` is the fit's mean absolute percentage error, in percent increase, on its own
points above the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from llmpq.errors import UserError

NOISE_FLOOR_PCT = 0.05  # increases below this are within ~10x the 8-bit plans' bf16 noise
ATTR_PREFIX = "calibration_"  # attrs: calibration_slope_pct_per_omega, ..._points


@dataclass(frozen=True)
class QualityCalibration:
    """``ppl_increase_pct = 100 · (exp((slope_pct_per_omega · Σω + intercept_pct) / 100) − 1)``,
    fitted on measured plans (the module docstring says why)."""

    slope_pct_per_omega: float
    intercept_pct: float
    mape_pct: float  # on the fitted points above NOISE_FLOOR_PCT
    points: int  # measured plans fitted

    def ppl_increase_pct(self, sum_omega: float) -> float:
        """Predicted perplexity increase (%) over the 16-bit model of a plan with ``sum_omega``."""
        return 100 * math.expm1(
            (self.slope_pct_per_omega * float(sum_omega) + self.intercept_pct) / 100
        )

    def omega_budget(self, ppl_increase_pct: float) -> float:
        """The largest Σω a plan may have for a predicted increase ≤ ``ppl_increase_pct`` %."""
        if ppl_increase_pct < 0:
            raise UserError(
                "perplexity increase", ppl_increase_pct, "give a target >= 0 (in percent)"
            )
        if self.slope_pct_per_omega <= 0:
            return float("inf")
        log_pct = 100 * math.log1p(ppl_increase_pct / 100)
        return max((log_pct - self.intercept_pct) / self.slope_pct_per_omega, 0.0)


def mape_pct(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error over the points measured above ``NOISE_FLOOR_PCT``."""
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    keep = measured >= NOISE_FLOOR_PCT
    if not keep.any():
        return float("nan")
    return float(np.mean(np.abs(predicted[keep] - measured[keep]) / measured[keep]) * 100)


def fit_quality_calibration(
    sum_omega: Sequence[float], ppl_increase_pct: Sequence[float]
) -> QualityCalibration:
    """Fit ``increase_pct = 100 · (exp(slope · Σω / 100) − 1)`` to measured plans (module
    docstring for the form)."""
    x = np.asarray(sum_omega, dtype=float)
    y = np.asarray(ppl_increase_pct, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"sum_omega {x.shape} and ppl_increase_pct {y.shape} must be 1-D alike")
    if (y >= NOISE_FLOOR_PCT).sum() < 2 or not (x > 0).any():
        raise UserError(
            "calibration plans",
            len(x),
            "measure more random plans (--calibrate N with N >= 8)",
            problem=f"give fewer than 2 plans with a perplexity increase >= {NOISE_FLOOR_PCT} %",
        )
    z = 100 * np.log1p(np.maximum(y, -99.0) / 100)  # log perplexity increase, in percent
    scale = np.maximum(z, 100 * np.log1p(NOISE_FLOOR_PCT / 100))  # at least the floor
    slope = float(np.sum(x / scale) / np.sum((x / scale) ** 2))
    cal = QualityCalibration(slope, 0.0, 0.0, int(len(x)))
    predicted = [cal.ppl_increase_pct(v) for v in x]
    return QualityCalibration(slope, 0.0, mape_pct(predicted, y), int(len(x)))


def attach_calibration(da: xr.DataArray, cal: QualityCalibration) -> xr.DataArray:
    """A copy of ``da`` with ``cal`` in its attrs (``calibration_*``, numbers only)."""
    out = da.copy()
    out.attrs = dict(da.attrs) | {ATTR_PREFIX + k: v for k, v in asdict(cal).items()}
    return out


def calibration_of(da: xr.DataArray) -> QualityCalibration | None:
    """The calibration stored in ``da``'s attrs, or None if it carries none."""
    keys = [ATTR_PREFIX + k for k in QualityCalibration.__dataclass_fields__]
    if not all(k in da.attrs for k in keys):
        return None
    slope, intercept, mape, points = (da.attrs[k] for k in keys)
    return QualityCalibration(float(slope), float(intercept), float(mape), int(points))
