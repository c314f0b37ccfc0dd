"""Roofline tables: ordered by the devices' peaks, flagged, fitted exactly, and calibratable."""

from __future__ import annotations

import numpy as np
import pytest

from llmpq.costmodel.latency import LatencyModel
from llmpq.costmodel.roofline import (
    DEFAULT_EFFICIENCY,
    Efficiency,
    EfficiencyFactors,
    calibrate_efficiency,
    roofline_table,
)
from llmpq.costmodel.tables import PHASES
from llmpq.devices import device_type
from llmpq.models.spec import model_spec

SPEC = model_spec("opt-30b")
GRID = {"batch": (1, 4, 16, 64), "seq": (128, 512, 2048)}


def test_decode_is_ordered_by_bandwidth_t4_vs_a100() -> None:
    t4, a100 = device_type("T4"), device_type("A100-40G")
    slow = roofline_table(SPEC, t4, **GRID).layer_ms.sel(phase="decode")
    fast = roofline_table(SPEC, a100, **GRID).layer_ms.sel(phase="decode")
    assert (slow > fast).all()
    # batch 1 decode reads the weights: the ratio approaches the bandwidth ratio (floors aside)
    ratio = (slow / fast).sel(bits=16, batch=1, seq=128).item()
    assert ratio == pytest.approx(a100.bandwidth_GBps / t4.bandwidth_GBps, rel=0.15)
    # fewer bits read fewer bytes: 4-bit decode beats 16-bit at batch 1
    assert (slow.sel(bits=4, batch=1) < slow.sel(bits=16, batch=1)).all()


def test_table_is_flagged_positive_and_grows_with_the_prompt() -> None:
    table = roofline_table(SPEC, device_type("V100-32G"), **GRID)
    assert table.attrs["source"] == "roofline" and table.attrs["device_type"] == "V100-32G"
    assert EfficiencyFactors.from_json(table.attrs["efficiency"]) == DEFAULT_EFFICIENCY
    assert (table.layer_ms > 0).all() and (table.head_ms > 0).all()
    assert (table.layer_ms.sel(phase="prefill").diff("seq") > 0).all()
    assert set(table.bits.values.tolist()) == set(device_type("V100-32G").bits)


def test_the_latency_form_fits_a_roofline_table_exactly() -> None:
    model = LatencyModel.from_table(roofline_table(SPEC, device_type("T4"), **GRID))
    assert max(f.fit_mape_pct for f in model.layer_fits.values()) < 0.5
    assert max(f.fit_mape_pct for f in model.part_fits.values()) < 0.5


def test_calibration_recovers_the_factors_of_a_measured_device() -> None:
    a10 = device_type("A10")
    known = EfficiencyFactors(
        {(p, b): Efficiency(0.5, 0.4) for p in PHASES for b in a10.bits}, layer_floor_ms=0.05
    )
    grid = {"batch": (1, 2, 4, 8), "seq": (16, 64, 256)}
    measured = roofline_table(model_spec("llama-2-7b"), a10, known, **grid)
    measured = measured.assign_attrs(source="measured", device_name="NVIDIA A10")
    found = calibrate_efficiency(measured, a10)
    assert (
        "calibrated" in found.source and found.layer_floor_ms == DEFAULT_EFFICIENCY.layer_floor_ms
    )
    for bits in a10.bits:
        eff = found.of("decode", bits)
        assert eff.bandwidth == pytest.approx(0.5, rel=0.05)
        # prefill's marginal token cost lumps elementwise work in: a little pessimistic
        assert 0.3 < eff.compute <= 0.4 * 1.01
    bigger = roofline_table(SPEC, device_type("A100-80G"), found, **GRID)
    assert np.isfinite(bigger.layer_ms.values).all()
