"""The analytic and random indicators: shape only, instant, seeded."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from llmpq.indicator import analytic_indicator, compute_indicator, random_indicator
from llmpq.models.spec import NAMED_SHAPES, model_spec


def test_analytic_depends_only_on_bits_and_layer_shape() -> None:
    spec = model_spec("opt-13b")
    da = analytic_indicator(spec)
    assert np.allclose(da.values, da.values[0])  # every layer alike
    renamed = analytic_indicator(spec.renamed("another-name")).values
    assert np.array_equal(renamed, da.values)
    # a model with more of the same layers: the same row per layer
    deeper = analytic_indicator(replace(spec, num_layers=7))
    assert np.array_equal(deeper.values[0], da.values[0])
    # a wider layer is a different shape: a different row
    assert not np.allclose(analytic_indicator(model_spec("opt-30b")).values[0], da.values[0])


def test_analytic_bit_ratios_follow_the_rtn_step() -> None:
    da = analytic_indicator(model_spec("llama-2-7b"))
    row = {int(b): float(v) for b, v in zip(da.bits, da.values[0], strict=True)}
    assert row[3] / row[4] == pytest.approx((15 / 7) ** 2)  # a group range over 7 vs 15 levels
    assert row[4] > 50 * row[8] > 0 and row[16] == 0


def test_analytic_is_instant_for_every_built_in_shape() -> None:
    start = time.perf_counter()
    arrays = [compute_indicator(name, "analytic") for name in NAMED_SHAPES]
    assert time.perf_counter() - start < 1.0
    assert all(a.sizes["layer"] == NAMED_SHAPES[a.attrs["model"]].num_layers for a in arrays)


def test_random_is_seeded_and_deterministic() -> None:
    spec = model_spec("opt-30b")
    a, b = random_indicator(spec, seed=3), random_indicator(spec, seed=3)
    assert np.array_equal(a.values, b.values) and a.attrs["seed"] == 3
    assert not np.array_equal(a.values, random_indicator(spec, seed=4).values)
    assert (a.sel(bits=16) == 0).all() and (a.values >= 0).all()
    assert np.allclose(a.sel(bits=3) / a.sel(bits=4), 3.0)  # LLM-PQ's 4.8 / 1.6
    assert a.sel(bits=3).std() > 0  # layers differ at random
