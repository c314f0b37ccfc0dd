"""The fitted latency model: recovers known coefficients, is robust to spoilt points, never
negative and never decreasing in batch or seq, and sums decode steps in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from llmpq.costmodel.latency import (
    LatencyModel,
    PhaseFit,
    fit_phase,
    layer_features,
    part_features,
)
from llmpq.costmodel.tables import PART_VARIABLES, PHASES, build_cost_table
from llmpq.errors import UserError
from llmpq.models.spec import model_spec

SPEC = model_spec("opt-125m")
BATCH, SEQ = (1, 2, 4, 8, 16, 32), (16, 32, 64, 128, 256)
# ms: a 0.1 floor, a ~15 ms/GB weight read (16-bit layer ≈ 0.2 ms) and a ridge inside the grid
TRUE = {
    "prefill": PhaseFit(0.1, 1.5e-8, 6e-11, 2e-4, 1e-6),
    "decode": PhaseFit(0.1, 1.5e-8, 6e-11, 0.0, 3e-6),
}


def _grid():
    return np.meshgrid(np.array(BATCH), np.array(SEQ), indexing="ij")


def _synthetic(phase: str, bits: int = 16) -> np.ndarray:
    b, s = _grid()
    return TRUE[phase].predict_ms(layer_features(SPEC, bits, phase, b, s))


@pytest.mark.parametrize("phase", PHASES)
def test_fit_recovers_known_coefficients(phase: str) -> None:
    b, s = _grid()
    fit = fit_phase(layer_features(SPEC, 16, phase, b, s), _synthetic(phase))
    true = TRUE[phase]
    assert fit.fit_mape_pct < 0.05 and fit.outliers == 0
    assert fit.ms_per_attention == pytest.approx(true.ms_per_attention, rel=0.02)
    if phase == "prefill":  # prefill crosses the ridge; decode stays weight-bound throughout
        assert fit.ms_per_flop == pytest.approx(true.ms_per_flop, rel=0.02)
    w = SPEC.layer_weight_bytes(16)  # the floor and the weight read add up to the flat part
    flat = true.floor_ms + true.ms_per_byte * w
    assert fit.floor_ms + fit.ms_per_byte * w == pytest.approx(flat, rel=0.02)
    # shapes off the grid, inside and beyond it
    for batch, seq in [(3, 24), (12, 200), (64, 1024)]:
        f = layer_features(SPEC, 16, phase, batch, seq)
        assert fit.predict_ms(f) == pytest.approx(true.predict_ms(f), rel=0.01)


def test_spoilt_points_are_left_out() -> None:
    rng = np.random.default_rng(0)
    y = _synthetic("prefill") * rng.normal(1.0, 0.01, size=(len(BATCH), len(SEQ)))
    y[2, 3] *= 3.0  # a burst of load elsewhere during one point
    b, s = _grid()
    fit = fit_phase(layer_features(SPEC, 16, "prefill", b, s), y)
    assert fit.outliers == 1 and fit.fit_mape_pct < 2.0
    clean = _synthetic("prefill")[2, 3]
    assert fit.predict_ms(layer_features(SPEC, 16, "prefill", 4, 128)) == pytest.approx(
        clean, rel=0.03
    )


def _model() -> LatencyModel:
    b, s = _grid()
    bits = (4, 16)
    layer = np.stack([np.stack([_synthetic(p, k) for p in PHASES]) for k in bits])
    parts = {}
    for name in PART_VARIABLES:
        part = name.removesuffix("_ms")
        parts[name] = np.stack(
            [TRUE[p].predict_ms(part_features(SPEC, part, p, b, s)) for p in PHASES]
        )
    table = build_cost_table(
        layer, parts, bits=bits, batch=BATCH, seq=SEQ, spec=SPEC, device_type="T4",
        source="fitted",
    )  # fmt: skip
    return LatencyModel.from_table(table)


def test_predictions_are_positive_and_monotone_far_beyond_the_grid() -> None:
    model = _model()
    batch = np.array([1, 2, 3, 7, 16, 100, 1000])[:, None]
    seq = np.array([1, 5, 64, 300, 4096, 32768])[None, :]
    for bits in model.bits:
        for phase in PHASES:
            ms = model.layer_ms(bits, phase, batch, seq)
            assert (ms > 0).all()
            assert (np.diff(ms, axis=0) >= 0).all() and (np.diff(ms, axis=1) >= 0).all()
        for part in ("embed", "head", "stage"):
            assert (model.part_ms(part, "decode", batch, seq) > 0).all()


def test_decode_steps_is_the_sum_over_a_growing_context() -> None:
    model = _model()
    steps, context = 31, 64
    summed = sum(model.decode_layer_ms(4, 8, context + k) for k in range(steps))
    assert model.decode_steps_ms(4, 8, context, steps) == pytest.approx(summed, rel=1e-9)
    batches = np.array([1, 8, 32])
    assert model.decode_steps_ms(4, batches, context, steps).shape == (3,)


def test_unknown_bits_or_phase_is_a_user_error() -> None:
    model = _model()
    with pytest.raises(UserError, match="bits = 8"):
        model.layer_ms(8, "decode", 1, 16)
    with pytest.raises(UserError, match="phase"):
        model.layer_ms(4, "generate", 1, 16)
