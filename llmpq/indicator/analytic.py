"""The analytic indicator: ω from bits and layer shape only, for models whose weights are not here.

Usage::

    from llmpq.indicator import analytic_indicator
    from llmpq.models.spec import model_spec

    da = analytic_indicator(model_spec("opt-30b"))    # instant, any built-in shape
    da.sel(bits=3) / da.sel(bits=4)                    # (15/7)² ≈ 4.6: a 3-bit step is 15/7 x a 4-bit one

Derivation (the variance indicator's model with the weights' statistics replaced by their
typical values). Let a linear's weights be roughly Gaussian, standard deviation σ, as trained
weights roughly are. RTN's step at ``b`` bits is

* 3/4 bits, per group of ``g = min(128, K)`` inputs: the group's range over ``2^b − 1`` levels;
  the expected range of ``g`` Gaussian draws is ``2 σ z(g)``, with ``z(n)`` the expected maximum
  of ``n`` standard normals (Blom: ``Φ⁻¹((n − 0.375) / (n + 0.25))``), so ``s = 2 σ z(g) / (2^b − 1)``;
* 8 bits, per row of ``K`` inputs, symmetric: ``s = σ z(2K) / 127`` (the largest ``|w|`` of K
  draws is the largest of ``2K`` signed ones, to first order).

Uniform rounding noise has variance ``s²/12``, so each output's error power relative to its
signal power (``K σ² E[x²]`` against ``K s²/12 · E[x²]``) is ``r(b) = s² / (12 σ²)``, free of σ
and of the inputs. Summed over the layer's linear outputs, in units of the hidden size::

    ω(layer, b) = Σ_linears (out_features / hidden_size) · r_linear(b),   ω(layer, 16) = 0

It depends on the bitwidth, the group size and the layer's shape: every layer of a model gets
the same row, so on its own it cannot tell a sensitive layer from a robust one. A plan's Σω is
then a weighted count of its low-bit layers; attach a quality calibration to turn it into a
perplexity increase.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr
from scipy.stats import norm

from llmpq.indicator.array import BITS, omega_array
from llmpq.models.spec import DEFAULT_GROUP_SIZE, ModelSpec, group_size_for

UNITS = "relative rounding-noise power of the layer's linear outputs, in hidden-size units"


def expected_max_normal(n: int) -> float:
    """Expected maximum of ``n`` standard normal draws (Blom's approximation)."""
    return float(norm.ppf((n - 0.375) / (n + 0.25)))


def relative_noise_power(
    in_features: int, bits: int, group_size: int = DEFAULT_GROUP_SIZE
) -> float:
    """``s² / (12 σ²)`` of RTN at ``bits`` on Gaussian weights with ``in_features`` inputs per row."""
    if bits == 16:
        return 0.0
    if bits == 8:
        step = expected_max_normal(2 * in_features) / 127
    else:
        group = group_size_for(in_features, group_size) or in_features  # as RTN chooses it
        step = 2 * expected_max_normal(group) / (2**bits - 1)
    return step**2 / 12


def analytic_indicator(spec: ModelSpec) -> xr.DataArray:
    """ω(layer, bits) of ``spec`` from its shape alone (module docstring)."""
    start = time.perf_counter()
    row = [
        sum(
            lin.out_features / spec.hidden_size * relative_noise_power(lin.in_features, b)
            for lin in spec.layer_linears()
        )
        for b in BITS
    ]
    values = np.tile(row, (spec.num_layers, 1))  # [L, len(BITS)]: every layer alike
    return omega_array(values, spec, "analytic", units=UNITS, seconds=time.perf_counter() - start)
