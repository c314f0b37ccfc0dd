"""On the trained default model: the indicators see what perplexity measures (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import spearmanr

from llmpq.indicator import compute_indicator
from llmpq.indicator.quality import measure_random_plans

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_variance_ranks_measured_plans(default_model: Path) -> None:
    """Layer 0 is the most sensitive (its 3-bit alone costs ~1.6 % perplexity, later ones
    <= 0.4 %), and Σω orders random plans as their measured perplexity does."""
    da = compute_indicator(default_model, "variance", num_windows=8, window_tokens=256)
    assert int(da.sel(bits=3).argmax("layer")) == 0
    points = measure_random_plans(default_model, 8, seed=1)
    rho = spearmanr(points.sum_omega(da), points.increase_pct).statistic
    assert rho > 0.6
