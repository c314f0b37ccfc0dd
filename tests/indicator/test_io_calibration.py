"""ω files (round trip, wrong shape) and the quality calibration (fit, budget, attrs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmpq.errors import UserError
from llmpq.indicator import (
    QualityCalibration,
    analytic_indicator,
    attach_calibration,
    calibrate_indicator,
    calibration_of,
    fit_quality_calibration,
    load_indicator,
    omega_budget,
    plan_omega,
    random_indicator,
    save_indicator,
)
from llmpq.indicator.quality import QualityPoints, random_plans
from llmpq.models.spec import model_spec

CAL = QualityCalibration(slope_pct_per_omega=2.5, intercept_pct=0.0, mape_pct=7.0, points=30)


def test_save_load_round_trip_keeps_values_and_calibration(tmp_path: Path) -> None:
    spec = model_spec("opt-13b")
    da = attach_calibration(random_indicator(spec, seed=2), CAL)
    path = save_indicator(da, tmp_path / "sub" / "opt-13b.nc")
    back = load_indicator(path, spec)
    assert np.array_equal(back.values, da.values)
    assert back.dims == ("layer", "bits") and back.name == "omega"
    assert back.attrs["method"] == "random" and back.attrs["seed"] == 2
    assert calibration_of(back) == CAL
    assert [p.name for p in path.parent.iterdir()] == ["opt-13b.nc"]  # no temp file left


def test_loading_a_file_for_another_shape_is_a_user_error(tmp_path: Path) -> None:
    path = save_indicator(analytic_indicator(model_spec("opt-30b")), tmp_path / "w.nc")
    with pytest.raises(UserError, match="another model shape.*48 layers, hidden 7168"):
        load_indicator(path, model_spec("opt-13b"))
    with pytest.raises(UserError, match="does not exist"):
        load_indicator(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("not netcdf")
    with pytest.raises(UserError, match="not a readable"):
        load_indicator(tmp_path / "junk.nc")


def test_fit_recovers_a_known_slope_and_inverts_to_a_budget() -> None:
    rng = np.random.default_rng(0)
    sum_omega = rng.uniform(0.1, 2.0, 40)
    increase = 100 * np.expm1(0.017 * sum_omega) * rng.normal(1.0, 0.05, 40)  # 5 % noise
    cal = fit_quality_calibration(sum_omega, increase)
    assert cal.slope_pct_per_omega == pytest.approx(1.7, rel=0.03)
    assert cal.intercept_pct == 0.0 and cal.points == 40
    assert 2 < cal.mape_pct < 8  # about the noise: E|N(0, 5 %)| = 4 %
    assert cal.ppl_increase_pct(cal.omega_budget(1.0)) == pytest.approx(1.0)
    assert cal.omega_budget(0.0) == 0.0
    with pytest.raises(UserError, match=">= 0"):
        cal.omega_budget(-1.0)


def test_fit_holds_where_perplexity_doubles() -> None:
    """Real weights: a few 3-bit layers double the perplexity; the fit is linear in log ppl."""
    sum_omega = np.linspace(0.05, 4.0, 30)
    increase = 100 * np.expm1(0.5 * sum_omega)  # up to +639 %
    cal = fit_quality_calibration(sum_omega, increase)
    assert cal.slope_pct_per_omega == pytest.approx(50.0, rel=1e-6)
    assert cal.mape_pct == pytest.approx(0.0, abs=1e-6)
    assert cal.ppl_increase_pct(2.0) == pytest.approx(100 * np.expm1(1.0))
    assert cal.omega_budget(100.0) == pytest.approx(2 * np.log(2))


def test_fit_needs_plans_above_the_noise_floor() -> None:
    with pytest.raises(UserError, match="measure more random plans"):
        fit_quality_calibration([0.1, 0.2, 0.3], [0.001, -0.002, 0.3])


def test_omega_budget_needs_an_attached_calibration() -> None:
    da = analytic_indicator(model_spec("opt-13b"))
    with pytest.raises(UserError, match="--calibrate"):
        omega_budget(da, 1.0)
    assert omega_budget(attach_calibration(da, CAL), 5.0) == pytest.approx(100 * np.log(1.05) / 2.5)


def test_calibrate_indicator_fits_measured_points() -> None:
    spec = model_spec("opt-125m")
    da = analytic_indicator(spec)
    plans = random_plans(spec.num_layers, 12, seed=1)
    assert all(len(set(p)) > 1 for p in plans)
    assert plans == random_plans(spec.num_layers, 12, seed=1)
    # log perplexity exactly 0.008 per unit Σω above a reference of 50 (0.8 % near 0)
    ppl = tuple(50 * np.exp(0.008 * plan_omega(da, p)) for p in plans)
    points = QualityPoints(50.0, tuple(plans), ppl, seconds=1.0)
    out = calibrate_indicator(da, "unused", points=points)
    assert calibration_of(out).slope_pct_per_omega == pytest.approx(0.8)
    assert calibration_of(out).mape_pct == pytest.approx(0.0, abs=1e-9)
    assert calibration_of(da) is None  # the input is left alone
