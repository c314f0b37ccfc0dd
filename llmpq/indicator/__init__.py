"""Quantization-sensitivity indicators ω(layer, bits), and the quality calibration that makes them %.

Usage::

    from llmpq.indicator import compute_indicator, omega_budget, save_indicator, load_indicator

    da = compute_indicator("results/models/default")                   # variance, on data/train.txt
    da = compute_indicator("results/models/default", "output-error", calib="my.txt")
    da = compute_indicator("opt-30b", "analytic")                       # a shape name: no weights
    da.sel(layer=2, bits=4).item(), plan_omega(da, [4, 4, 8, 16, 3, 3])
    da = calibrate_indicator(da, "results/models/default", num_plans=16)   # measured ppl -> fit
    omega_budget(da, 1.0)              # the Σω a plan may have for a perplexity increase <= 1 %
    save_indicator(da, "results/indicator/default.nc"); load_indicator(path, spec)

or ``llmpq indicator --model M [--method ...] [--calibrate N] --out F.nc``. Methods:

* ``variance`` (default): the rounding-noise power of every linear's output, from the step the
  real quantizer uses (group-wise at 3/4 bits, per channel at 8) and each input channel's second
  moment on calibration text (:mod:`~llmpq.indicator.variance`); ``variance-paper`` is LLM-PQ's
  original per-tensor formula, kept for comparison.
* ``hessian``: ½ Δwᵀ diag(F) Δw, the diagonal-Fisher estimate of the loss increase
  (:mod:`~llmpq.indicator.hessian`).
* ``output-error``: measured KL of the next-token distribution with one layer quantized at a
  time (:mod:`~llmpq.indicator.output_error`), the most direct and the most expensive.
* ``analytic``: bits and layer shape only, for the planning track (:mod:`~llmpq.indicator.analytic`).
* ``random``: LLM-PQ's seeded random control (:mod:`~llmpq.indicator.random`).

The array's contract is in :mod:`~llmpq.indicator.array`, the file's in
:mod:`~llmpq.indicator.io`, the calibration's in :mod:`~llmpq.indicator.calibration` and
:mod:`~llmpq.indicator.quality`.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import MappingProxyType

import xarray as xr

from llmpq.errors import UserError
from llmpq.indicator.analytic import analytic_indicator
from llmpq.indicator.array import BITS, monotone_in_bits, omega_array, plan_omega
from llmpq.indicator.calibration import (
    QualityCalibration,
    attach_calibration,
    calibration_of,
    fit_quality_calibration,
)
from llmpq.indicator.io import load_indicator, save_indicator
from llmpq.indicator.random import random_indicator
from llmpq.models.spec import model_spec

# weight-based method -> (ω values [L, len(BITS)] from the fp32 model and windows [W, T], units)
# (module, function, units constant): imported on use, so that the shape-only methods (and a
# planner on the planning track) do not pay for torch and transformers
MEASURED = MappingProxyType(
    {
        "variance": ("variance", "variance_values", "UNITS"),
        "variance-paper": ("variance", "paper_variance_values", "PAPER_UNITS"),
        "hessian": ("hessian", "hessian_values", "UNITS"),
        "output-error": ("output_error", "output_error_omega", "UNITS"),
    }
)
LAZY = MappingProxyType(
    {
        "FullModel": "model",
        "QualityPoints": "quality",
        "calibrate_indicator": "quality",
        "measure_random_plans": "quality",
        "indicator_samples": "samples",
    }
)


def __getattr__(name: str):
    """The exports that need torch, imported on first use (PEP 562)."""
    if name in LAZY:
        return getattr(importlib.import_module(f"llmpq.indicator.{LAZY[name]}"), name)
    raise AttributeError(f"module 'llmpq.indicator' has no attribute {name!r}")


SHAPE_METHODS = ("analytic", "random")  # need no weights
METHODS = (*MEASURED, *SHAPE_METHODS)

# method -> default (num_windows, window_tokens) of calibration text. Enough for stable ranks on
# the default model in seconds; output-error runs 3 L passes of its sample, so it gets fewer.
DEFAULT_SAMPLES = MappingProxyType(
    {
        "variance": (16, 512),
        "variance-paper": (16, 512),
        "hessian": (32, 256),
        "output-error": (8, 256),
    }
)


def compute_indicator(
    model: str | Path,
    method: str = "variance",
    *,
    calib: str | Path | None = None,
    seed: int = 0,
    num_windows: int | None = None,
    window_tokens: int | None = None,
) -> xr.DataArray:
    """ω(layer, bits) of ``model`` (a checkpoint directory, or a shape name for analytic/random).

    ``calib`` is the calibration text (default: ``MODEL/data/train.txt``); ``num_windows`` and
    ``window_tokens`` size its sample (defaults per method in ``DEFAULT_SAMPLES``); ``seed``
    seeds ``random``.
    """
    if method not in METHODS:
        raise UserError("--method", method, f"choose one of {', '.join(METHODS)}")
    spec = model_spec(model)
    if method == "analytic":
        return analytic_indicator(spec)
    if method == "random":
        return random_indicator(spec, seed)
    if not Path(model).is_dir():
        raise UserError(
            "--model",
            str(model),
            f"give a local checkpoint directory for {method}, or use --method analytic (or "
            "random) for a shape name",
            problem=f"is a shape name without weights; the {method} indicator needs weights",
        )
    start = time.perf_counter()
    default_windows, default_tokens = DEFAULT_SAMPLES[method]
    window_tokens = min(window_tokens or default_tokens, spec.max_positions)
    from llmpq.indicator.model import FullModel
    from llmpq.indicator.samples import indicator_samples

    samples = indicator_samples(model, calib, num_windows or default_windows, window_tokens)
    full = FullModel.load(model)
    module_name, function, units_name = MEASURED[method]
    module = importlib.import_module(f"llmpq.indicator.{module_name}")
    compute, units = getattr(module, function), getattr(module, units_name)
    values = monotone_in_bits(compute(full, samples.windows))
    return omega_array(
        values,
        spec,
        method,
        units=units,
        seconds=time.perf_counter() - start,
        seed=seed,
        calibration_text=str(samples.text),
    )


def omega_budget(da: xr.DataArray, ppl_increase_pct: float) -> float:
    """The Σω a plan may have for a perplexity increase ≤ ``ppl_increase_pct`` % (needs a calibration)."""
    cal = calibration_of(da)
    if cal is None:
        raise UserError(
            "indicator",
            f"{da.attrs.get('method')} for {da.attrs.get('model')}",
            "attach one: llmpq indicator --model DIR --calibrate 16 --out F.nc "
            "(or calibrate_indicator(da, model_dir, num_plans))",
            problem="carries no quality calibration, so a perplexity target has no ω budget",
        )
    return cal.omega_budget(ppl_increase_pct)


__all__ = [
    "BITS",
    "METHODS",
    "QualityCalibration",
    "QualityPoints",
    "analytic_indicator",
    "attach_calibration",
    "calibrate_indicator",
    "calibration_of",
    "compute_indicator",
    "fit_quality_calibration",
    "load_indicator",
    "measure_random_plans",
    "omega_budget",
    "plan_omega",
    "random_indicator",
    "save_indicator",
]
