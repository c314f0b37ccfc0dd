"""The latency model: a roofline-shaped form fitted per (bits, phase) to a cost table.

Usage::

    from llmpq.costmodel.latency import LatencyModel

    model = LatencyModel.from_table(table)                 # table: a cost-table Dataset
    model.layer_ms(4, "prefill", batch=8, seq=64)          # one decoder layer, ms (numpy-friendly)
    model.layer_ms(4, "decode", batch=8, seq=[64, 65, 66]) # seq: the context already cached
    model.decode_steps_ms(4, batch=8, context=64, steps=31)   # Σ over a growing context, O(1)
    model.part_ms("head", "decode", batch=8, seq=64)       # embed | head | stage

The form, for ``n`` new tokens (``batch·seq`` in prefill, ``batch`` in decode) attending to
``ctx`` keys (``seq`` in prefill, ``seq + 1`` in decode)::

    ms = floor + max(ms_per_byte · W, ms_per_flop · F) + ms_per_token · n + ms_per_attention · A

* ``W``: weight bytes read (the layer at ``bits``, scales and zeros included), ``F``: matmul
  FLOPs (2·n·weights): the max is the roofline of the linears: weight streaming below the ridge,
  compute above it;
* ``n``: per-token work outside the matmuls that does not overlap them (norms, residuals,
  rotary, activation functions, the linears' activation traffic);
* ``A = batch · q · ctx``: attention: batch·seq² in prefill, batch·context in decode (reading
  and appending the KV cache);
* ``floor``: the fixed cost of a call (kernel launches, Python dispatch): tiny layers on a CPU
  are dominated by it.

Every coefficient is non-negative (``scipy.optimize.nnls``, with the ridge ``ms_per_byte /
ms_per_flop`` chosen by a 1-D search), so predictions are never negative and never decrease in
batch or seq, and extrapolate along the physics rather than a polynomial. Residuals are
relative (the fit minimises squared percentage error). The same form with the terms written
from datasheet peaks is :mod:`llmpq.costmodel.roofline`.

Pre/post parts reuse it with their own ``W, F, n, A``: ``embed`` (a gather: n only), ``head``
(final norm + LM head on the last position: W = head bytes, F = 2·batch·V·H) and ``stage``
(masks and position tables: n and A).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import xarray as xr
from scipy.optimize import minimize_scalar, nnls

from llmpq.costmodel.tables import PHASES, table_spec
from llmpq.errors import UserError
from llmpq.models.spec import ModelSpec

PARTS = ("embed", "head", "stage")
RIDGE_CANDIDATES = 48  # ridge values tried between the data's lowest and highest F/W
OUTLIER_FACTOR = 5.0  # a point missed by more than this × the median miss is left out ...
OUTLIER_MIN_PCT = 15.0  # ... if that miss also exceeds this percentage


@dataclass(frozen=True)
class Features:
    """Per-point regressors of the form (arrays broadcast together)."""

    weight_bytes: np.ndarray
    flops: np.ndarray
    tokens: np.ndarray
    attention: np.ndarray


def _shape(phase: str, batch, seq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batch, new tokens per sequence q, keys attended ctx) as float arrays."""
    if phase not in PHASES:
        raise UserError("phase", phase, f"use one of {list(PHASES)}")
    b = np.asarray(batch, dtype=np.float64)
    s = np.asarray(seq, dtype=np.float64)
    if phase == "prefill":
        return b, s, s
    return b, np.ones_like(s), s + 1


@functools.cache
def _layer_sizes(spec: ModelSpec, bits: int) -> tuple[float, float]:
    """(weight bytes at ``bits``, weight count) of one layer: memoised, the planner asks often."""
    weights = sum(lin.weight_count for lin in spec.layer_linears())
    return float(spec.layer_weight_bytes(bits)), float(weights)


def layer_features(spec: ModelSpec, bits: int, phase: str, batch, seq) -> Features:
    """``W, F, n, A`` of one decoder layer at ``bits``."""
    b, q, ctx = _shape(phase, batch, seq)
    n = b * q
    weight_bytes, weights = _layer_sizes(spec, int(bits))
    w = np.full(np.broadcast(b, q).shape, weight_bytes)
    return Features(w, 2.0 * n * weights, n, b * q * ctx)


def part_features(spec: ModelSpec, part: str, phase: str, batch, seq) -> Features:
    """``W, F, n, A`` of a pre/post part: ``embed``, ``head`` or ``stage``."""
    b, q, ctx = _shape(phase, batch, seq)
    n = b * q
    zero = np.zeros(np.broadcast(b, q).shape)
    if part == "embed":
        return Features(zero, zero, n, zero)
    if part == "head":  # logits of the last position of each sequence only
        w = zero + float(spec.head_bytes())
        return Features(w, 2.0 * b * spec.vocab_size * spec.embed_dim + zero, b + zero, zero)
    if part == "stage":
        return Features(zero, zero, n, b * q * ctx)
    raise UserError("part", part, f"use one of {list(PARTS)}")


@dataclass(frozen=True)
class PhaseFit:
    """Non-negative coefficients of the form for one (part or bits, phase)."""

    floor_ms: float
    ms_per_byte: float
    ms_per_flop: float
    ms_per_token: float
    ms_per_attention: float
    fit_mape_pct: float = float("nan")  # on the points it was fitted to (outliers left out)
    points: int = 0
    outliers: int = 0  # points left out of the fit as spoilt timings

    def predict_ms(self, f: Features) -> np.ndarray:
        roof = np.maximum(self.ms_per_byte * f.weight_bytes, self.ms_per_flop * f.flops)
        return (
            self.floor_ms
            + roof
            + self.ms_per_token * f.tokens
            + self.ms_per_attention * (f.attention)
        )

    @property
    def bandwidth_GBps(self) -> float:
        """Effective weight-streaming bandwidth (inf when the fit has no such term)."""
        return 1e-6 / self.ms_per_byte if self.ms_per_byte > 0 else float("inf")

    @property
    def TFLOPS(self) -> float:
        """Effective matmul throughput (inf when the fit has no such term)."""
        return 1e-9 / self.ms_per_flop if self.ms_per_flop > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        return {
            "floor_ms": self.floor_ms, "ms_per_byte": self.ms_per_byte,
            "ms_per_flop": self.ms_per_flop, "ms_per_token": self.ms_per_token,
            "ms_per_attention": self.ms_per_attention, "fit_mape_pct": self.fit_mape_pct,
            "points": self.points, "outliers": self.outliers,
        }  # fmt: skip


def _flat(f: Features) -> Features:
    arrays = np.broadcast_arrays(f.weight_bytes, f.flops, f.tokens, f.attention)
    return Features(*(a.ravel().astype(np.float64) for a in arrays))


def _ridges(f: Features) -> list[float]:
    """Candidate ridges F/W where the max switches: a log grid over the data, and both ends
    (0: compute only, inf: weights only)."""
    both = (f.weight_bytes > 0) & (f.flops > 0)
    if not both.any():
        return [np.inf]
    ratio = f.flops[both] / f.weight_bytes[both]
    lo, hi = ratio.min() / 2, ratio.max() * 2
    return [0.0, *np.geomspace(lo, hi, RIDGE_CANDIDATES).tolist(), np.inf]


def _design(f: Features, ridge: float) -> np.ndarray:
    """Columns [1, roof, n, A]; roof = max(W, F/ridge) in bytes, or F when ridge = 0."""
    if ridge == 0.0:
        roof = f.flops
    elif np.isinf(ridge):
        roof = f.weight_bytes
    else:
        roof = np.maximum(f.weight_bytes, f.flops / ridge)
    return np.column_stack([np.ones_like(roof), roof, f.tokens, f.attention])


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative coefficients minimising Σ((x·c − y)/y)², and that residual."""
    a = x / y[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    coef, residual = nnls(a / scale, np.ones_like(y), maxiter=50 * a.shape[1])
    return coef / scale, residual


def _best_fit(f: Features, y: np.ndarray) -> PhaseFit:
    """The ridge with the least relative residual (a log grid, then a bounded 1-D search
    between the best point's neighbours), and its non-negative coefficients."""
    ridges = _ridges(f)
    fits = []  # (residual, coefficients, ridge)
    for r in ridges:
        coef, res = _nnls_relative(_design(f, r), y)
        fits.append((res, coef, r))
    i = min(range(len(fits)), key=lambda k: fits[k][0])
    _, coef, ridge = fits[i]
    if 0 < i < len(ridges) - 1 and np.isfinite(ridges[i + 1]) and ridges[i - 1] > 0:

        def residual(log_ridge: float) -> float:
            return _nnls_relative(_design(f, float(np.exp(log_ridge))), y)[1]

        found = minimize_scalar(
            residual, bounds=(np.log(ridges[i - 1]), np.log(ridges[i + 1])), method="bounded",
            options={"xatol": 1e-6},
        )  # fmt: skip
        if found.fun < fits[i][0]:
            ridge = float(np.exp(found.x))
            coef = _nnls_relative(_design(f, ridge), y)[0]
    floor, roof, per_token, per_attention = coef
    if ridge == 0.0:
        per_byte, per_flop = 0.0, roof
    elif np.isinf(ridge):
        per_byte, per_flop = roof, 0.0
    else:
        per_byte, per_flop = roof, roof / ridge
    return PhaseFit(float(floor), float(per_byte), float(per_flop), float(per_token),
                    float(per_attention), points=int(y.size))  # fmt: skip


def _subset(f: Features, keep: np.ndarray) -> Features:
    return Features(*(a[keep] for a in (f.weight_bytes, f.flops, f.tokens, f.attention)))


def fit_phase(features: Features, latency_ms) -> PhaseFit:
    """Fit the form to measured points; NaN points are skipped, and points the first fit misses
    by far more than the rest (``OUTLIER_FACTOR`` × the median relative miss, and at least
    ``OUTLIER_MIN_PCT``: a timing spoilt by other load) are dropped for a second fit."""
    y = np.asarray(latency_ms, dtype=np.float64)
    features = Features(*np.broadcast_arrays(*vars(features).values(), y)[:4])
    y = np.broadcast_to(y, features.tokens.shape).ravel()
    f = _flat(features)
    keep = np.isfinite(y) & (y > 0)
    if not keep.any():
        raise UserError("cost table", "all NaN", "measure at least one point per bits and phase")
    f, y = _subset(f, keep), y[keep]
    fit = _best_fit(f, y)
    miss = np.abs(fit.predict_ms(f) - y) / y
    inliers = miss <= max(OUTLIER_FACTOR * np.median(miss), OUTLIER_MIN_PCT / 100)
    if not inliers.all() and inliers.sum() >= 4:
        fit = _best_fit(_subset(f, inliers), y[inliers])
        miss = np.abs(fit.predict_ms(f) - y) / y
    mape = float(np.mean(miss[inliers]) * 100)
    return replace(fit, fit_mape_pct=mape, outliers=int((~inliers).sum()))


@dataclass(frozen=True)
class LatencyModel:
    """Fitted per-layer and pre/post latencies of one model shape on one device type."""

    spec: ModelSpec
    layer_fits: Mapping[tuple[int, str], PhaseFit]  # (bits, phase) -> fit
    part_fits: Mapping[tuple[str, str], PhaseFit]  # (part, phase) -> fit

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_fits", MappingProxyType(dict(self.layer_fits)))
        object.__setattr__(self, "part_fits", MappingProxyType(dict(self.part_fits)))

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(sorted({b for b, _ in self.layer_fits}))

    @classmethod
    def from_table(cls, table: xr.Dataset) -> LatencyModel:
        """Fit every (bits, phase) of ``layer_ms`` and every (part, phase) of the parts."""
        spec = table_spec(table)
        batch, seq = np.meshgrid(table.batch.values, table.seq.values, indexing="ij")
        layer_fits, part_fits = {}, {}
        for phase in PHASES:
            for bits in table.bits.values.tolist():
                y = table.layer_ms.sel(bits=bits, phase=phase).transpose("batch", "seq").values
                f = layer_features(spec, bits, phase, batch, seq)
                layer_fits[(int(bits), phase)] = fit_phase(f, y)
            for part in PARTS:
                y = table[f"{part}_ms"].sel(phase=phase).transpose("batch", "seq").values
                if np.isfinite(y).any():
                    f = part_features(spec, part, phase, batch, seq)
                    part_fits[(part, phase)] = fit_phase(f, y)
        return cls(spec, layer_fits, part_fits)

    def _layer_fit(self, bits: int, phase: str) -> PhaseFit:
        try:
            return self.layer_fits[(int(bits), phase)]
        except KeyError:
            raise UserError(
                "bits", bits, f"use bits the cost table has ({list(self.bits)}) and a phase in "
                f"{list(PHASES)}", problem=f"has no latency for phase {phase!r}",
            ) from None  # fmt: skip

    def layer_ms(self, bits: int, phase: str, batch, seq) -> np.ndarray | float:
        """One decoder layer at ``bits``; ``seq``: prompt (prefill) or cached context (decode)."""
        fit = self._layer_fit(bits, phase)
        out = fit.predict_ms(layer_features(self.spec, bits, phase, batch, seq))
        return float(out) if np.ndim(out) == 0 else out

    def prefill_layer_ms(self, bits: int, batch, prompt_len) -> np.ndarray | float:
        return self.layer_ms(bits, "prefill", batch, prompt_len)

    def decode_layer_ms(self, bits: int, batch, context) -> np.ndarray | float:
        return self.layer_ms(bits, "decode", batch, context)

    def decode_steps_ms(self, bits: int, batch, context, steps: int) -> np.ndarray | float:
        """Σ of ``decode_layer_ms`` over contexts ``context .. context + steps - 1`` (closed form:
        only the attention term grows with the context)."""
        fit = self._layer_fit(bits, "decode")
        b = np.asarray(batch, dtype=np.float64)
        c = np.asarray(context, dtype=np.float64)
        fixed = fit.predict_ms(layer_features(self.spec, bits, "decode", b, np.zeros_like(c)))
        # attention of step k is b·(c + k + 1); the fixed part already counts b·1 per step
        out = steps * fixed + fit.ms_per_attention * b * (steps * c + steps * (steps - 1) / 2)
        return float(out) if np.ndim(out) == 0 else out

    def part_ms(self, part: str, phase: str, batch, seq) -> np.ndarray | float:
        """A pre/post part (``embed``, ``head``, ``stage``); 0 if the table did not measure it."""
        fit = self.part_fits.get((part, phase))
        if fit is None:
            if part not in PARTS:
                raise UserError("part", part, f"use one of {list(PARTS)}")
            return 0.0 * np.asarray(batch, dtype=np.float64) * np.asarray(seq)
        out = fit.predict_ms(part_features(self.spec, part, phase, batch, seq))
        return float(out) if np.ndim(out) == 0 else out
