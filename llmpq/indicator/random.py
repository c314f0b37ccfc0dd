"""The random indicator: LLM-PQ's seeded control, a bit table scaled by a random factor per layer.

Usage::

    from llmpq.indicator import random_indicator

    da = random_indicator(spec, seed=0)     # same seed, same array
    da.sel(bits=3) / da.sel(bits=4)         # 3.0 in every layer

LLM-PQ's default when no indicator is given (``assign_omega_constant``, paper spec §5.3): each
layer draws ``r ~ U(0, 1)`` and ``ω(layer, b) = r · 2 · table[b]`` (attention and FFN at the
same bitwidth) with ``table = {3: 4.8, 4: 1.6, 8: 0.4}``. Here ``ω(·, 16) = 0`` (the original's
0.1 only kept its solver well posed) and the draw is seeded, so plans are reproducible. It
knows that fewer bits hurt more but nothing about which layers are sensitive: the control an
informed indicator must beat.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

from llmpq.indicator.array import BITS, omega_array
from llmpq.models.spec import ModelSpec

BIT_TABLE = {3: 4.8, 4: 1.6, 8: 0.4, 16: 0.0}  # LLM-PQ's assign_omega_constant table
UNITS = "arbitrary (LLM-PQ's random control)"


def random_indicator(spec: ModelSpec, seed: int = 0) -> xr.DataArray:
    """Seeded ``r_layer · 2 · table[bits]`` (module docstring)."""
    start = time.perf_counter()
    scale = np.random.default_rng(seed).uniform(0.0, 1.0, spec.num_layers)  # [L]
    values = scale[:, None] * 2 * np.array([BIT_TABLE[b] for b in BITS])[None, :]
    return omega_array(
        values, spec, "random", units=UNITS, seconds=time.perf_counter() - start, seed=seed
    )
