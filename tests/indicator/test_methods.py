"""The measured indicators on the tiny model: the contract, and what each method must get right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmpq.errors import UserError
from llmpq.indicator import BITS, METHODS, compute_indicator
from llmpq.indicator.model import FullModel, quantized_weight
from llmpq.indicator.output_error import mean_kl
from llmpq.indicator.variance import noise_power

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"num_windows": 4, "window_tokens": 64}  # keeps each method well under a second


@pytest.fixture(scope="module", params=["variance", "variance-paper", "hessian", "output-error"])
def measured(request: pytest.FixtureRequest, tiny_default: Path):
    return compute_indicator(tiny_default, request.param, **SMALL)


def test_measured_indicators_honour_the_contract(measured, tiny_default: Path) -> None:
    assert measured.name == "omega"
    assert measured.dims == ("layer", "bits")
    assert list(measured.layer.values) == [0, 1]
    assert list(measured.bits.values) == list(BITS)
    assert measured.dtype == np.float64
    assert (measured.sel(bits=16) == 0).all()
    values = measured.values
    # fewer bits, more damage: strictly so for 3 < 4 < 8 on every layer
    assert (values[:, 0] > values[:, 1]).all() and (values[:, 1] > values[:, 2]).all()
    assert (values[:, 2] > 0).all()
    attrs = measured.attrs
    assert attrs["method"] in METHODS and attrs["model"] == tiny_default.name
    assert (attrs["num_layers"], attrs["hidden_size"]) == (2, 256)
    assert attrs["calibration_text"].endswith("train.txt") and attrs["seconds"] >= 0
    assert all(isinstance(v, str | int | float) for v in attrs.values())


def test_variance_step_matches_the_quantizers_actual_error() -> None:
    """Σ_n E[(ΔW x)_n²] of real RTN rounding ≈ the noise power predicted from its steps."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(256, 512, generator=gen) * 0.05  # [N, K]
    channel_scale = torch.linspace(0.2, 3.0, 512)  # unequal input channels
    x = torch.randn(4096, 512, generator=gen) * channel_scale  # [tokens, K]
    second_moment = (x**2).mean(0)  # [K]
    for bits in (3, 4, 8):
        error = w - quantized_weight(w, bits)  # [N, K]
        measured = ((x @ error.T) ** 2).mean(0).sum().item()
        predicted = noise_power(w, bits, second_moment, group_size=128)
        assert predicted == pytest.approx(measured, rel=0.15), bits


def test_kl_is_zero_for_identical_logits_and_positive_otherwise() -> None:
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(1))
    assert mean_kl(logits, logits) == pytest.approx(0.0, abs=1e-12)
    assert mean_kl(logits, logits + 7.0) == pytest.approx(0.0, abs=1e-12)  # softmax-invariant
    assert mean_kl(logits, logits.flip(-1)) > 0


def test_output_error_leaves_the_model_as_it_found_it(tiny_default: Path) -> None:
    from llmpq.indicator.output_error import output_error_omega
    from llmpq.indicator.samples import indicator_samples

    model = FullModel.load(tiny_default)
    before = {(i, name): lin.weight.clone() for i, name, lin in model.linears()}
    windows = indicator_samples(tiny_default, None, 2, 32).windows
    output_error_omega(model, windows)
    for (i, name), w in before.items():
        assert torch.equal(model.linear(i, name).weight, w)


def test_calibration_text_too_short_is_a_user_error(tiny_default: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("def f(x):\n    return x + 1\n" * 20)
    with pytest.raises(UserError, match="fewer than the 16 windows"):
        compute_indicator(tiny_default, calib=short, num_windows=16, window_tokens=64)


def test_samples_are_distinct_windows(tiny_default: Path) -> None:
    from llmpq.indicator.samples import indicator_samples

    samples = indicator_samples(tiny_default, None, 8, 64)
    assert samples.windows.shape == (8, 64)
    assert samples.tokens == 512
    assert len({tuple(w.tolist()) for w in samples.windows}) == 8


def test_unknown_method_and_shape_names_need_the_right_method() -> None:
    with pytest.raises(UserError, match="choose one of"):
        compute_indicator("opt-30b", "varience")
    with pytest.raises(UserError, match="needs weights"):
        compute_indicator("opt-30b", "hessian")
