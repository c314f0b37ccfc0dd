"""Measure random mixed plans' perplexity increases, and calibrate an indicator on them.

Usage::

    from llmpq.indicator.quality import calibrate_indicator, measure_random_plans, random_plans

    points = measure_random_plans("results/models/default", num_plans=16, seed=0)
    points.plans, points.increase_pct          # bit plans and their measured increase (%)
    da = calibrate_indicator(da, "results/models/default", points=points)   # fit, attach
    da = calibrate_indicator(da, "results/models/default", num_plans=16)    # measure, fit, attach

A plan's increase is ``100 · (ppl_plan / ppl_16 − 1)`` on the model's held-out text, both
perplexities measured by :func:`llmpq.quality.plan_perplexity` (``llmpq ppl``'s path: the
quantized modules the runtime serves, RTN by default). Plans draw every layer's bitwidth
uniformly from {3, 4, 8, 16}, seeded; a plan with a single bitwidth is redrawn (mixed plans).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from llmpq.errors import UserError
from llmpq.indicator.array import BITS, plan_omega
from llmpq.indicator.calibration import attach_calibration, fit_quality_calibration
from llmpq.models.spec import model_spec


@dataclass(frozen=True)
class QualityPoints:
    """Measured perplexity of random mixed plans against the 16-bit model."""

    reference_perplexity: float  # the 16-bit model
    plans: tuple[tuple[int, ...], ...]
    perplexity: tuple[float, ...]
    seconds: float  # all measurements

    @property
    def increase_pct(self) -> tuple[float, ...]:
        return tuple(100 * (p / self.reference_perplexity - 1) for p in self.perplexity)

    def sum_omega(self, da: xr.DataArray) -> list[float]:
        """Σω of every plan under the indicator ``da``."""
        return [plan_omega(da, plan) for plan in self.plans]


def random_plans(num_layers: int, num_plans: int, seed: int = 0) -> list[tuple[int, ...]]:
    """``num_plans`` seeded plans, each layer's bits uniform over BITS, at least two bitwidths."""
    rng = np.random.default_rng(seed)
    plans: list[tuple[int, ...]] = []
    while len(plans) < num_plans:
        plan = tuple(int(b) for b in rng.choice(BITS, num_layers))
        if len(set(plan)) > 1 or num_layers == 1:
            plans.append(plan)
    return plans


def measure_random_plans(
    model_dir: str | Path,
    num_plans: int,
    seed: int = 0,
    *,
    text: str | Path | None = None,
    plans: Sequence[Sequence[int]] | None = None,
) -> QualityPoints:
    """Perplexity of ``num_plans`` random mixed plans (or the given ``plans``) and of 16 bits."""
    from llmpq.quality import plan_perplexity

    if isinstance(num_plans, bool) or not isinstance(num_plans, int) or num_plans < 2:
        raise UserError("--calibrate", num_plans, "measure at least 2 plans (16 is a good start)")
    start = time.perf_counter()
    spec = model_spec(model_dir)
    plans = [tuple(p) for p in plans] if plans is not None else None
    plans = plans or random_plans(spec.num_layers, num_plans, seed)
    reference = plan_perplexity(model_dir, [16] * spec.num_layers, text).perplexity
    ppl = tuple(plan_perplexity(model_dir, plan, text).perplexity for plan in plans)
    return QualityPoints(reference, tuple(plans), ppl, time.perf_counter() - start)


def calibrate_indicator(
    da: xr.DataArray,
    model_dir: str | Path,
    num_plans: int = 16,
    seed: int = 0,
    *,
    points: QualityPoints | None = None,
    text: str | Path | None = None,
) -> xr.DataArray:
    """``da`` with a quality calibration fitted on measured plans (measured here unless given)."""
    points = points or measure_random_plans(model_dir, num_plans, seed, text=text)
    cal = fit_quality_calibration(points.sum_omega(da), points.increase_pct)
    out = attach_calibration(da, cal)
    out.attrs["calibration_seconds"] = round(points.seconds, 3)
    return out
