"""Communication: the fit recovers latency and bandwidth; a real two-rank gloo run; links."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmpq.cluster import Cluster
from llmpq.costmodel.comm import (
    CommFit,
    default_payloads,
    fit_transfers,
    link_transfer_ms,
    load_comm,
    measure_comm,
    save_comm,
)
from llmpq.errors import UserError
from llmpq.models.spec import model_spec


def test_fit_recovers_latency_and_bandwidth() -> None:
    sizes = np.array([1e3, 1e4, 1e5, 1e6, 1e7])
    ms = 0.05 + sizes / (3.0 * 1e6)  # 50 µs + 3 GB/s
    fit = fit_transfers(sizes, ms, "gloo")
    assert fit.latency_ms == pytest.approx(0.05, rel=1e-6)
    assert fit.bandwidth_GBps == pytest.approx(3.0, rel=1e-6)
    assert fit.transfer_ms(2e6) == pytest.approx(0.05 + 2e6 / 3e6)


def test_two_gloo_ranks_give_a_sensible_fit() -> None:
    spec = model_spec("opt-125m")
    payloads = default_payloads(spec)
    assert payloads[0] == spec.hidden_bytes_per_token()  # one decode token
    fit = measure_comm(sizes_bytes=[1024, 64 * 1024, 1 << 20, 4 << 20], backend="gloo")
    assert fit.backend == "gloo" and fit.points == 4
    assert 0 <= fit.latency_ms < 20 and 0.05 < fit.bandwidth_GBps < 1000
    assert fit.transfer_ms(4 << 20) > fit.transfer_ms(1024) > 0


def test_listed_links_override_the_measurement(tmp_path: Path) -> None:
    cluster = Cluster.from_dict(
        {
            "devices": [
                {"name": "a", "type": "T4", "host": "n1"},
                {"name": "b", "type": "T4", "host": "n1"},
                {"name": "c", "type": "T4", "host": "n2"},
                {"name": "d", "type": "T4", "host": "n3"},
            ],
            "links": [{"between": ["n1", "n2"], "bandwidth_GBps": 1.0, "latency_ms": 0.5}],
        }
    )
    a, b, c, d = cluster.devices
    measured = CommFit(latency_ms=0.02, bandwidth_GBps=10.0, points=5, fit_mape_pct=1.5)
    size = 1_000_000
    assert link_transfer_ms(cluster, a, a, size, measured) == 0.0
    assert link_transfer_ms(cluster, a, b, size, measured) == pytest.approx(0.02 + 0.1)
    assert link_transfer_ms(cluster, a, c, size, measured) == pytest.approx(0.5 + 1.0)
    assert link_transfer_ms(cluster, a, d, size, measured) == cluster.link(a, d).transfer_ms(size)
    path = save_comm(measured, tmp_path / "comm.json")
    assert load_comm(path) == measured
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        load_comm(tmp_path / "bad.json")


def test_a_flat_noisy_sample_never_gives_an_infinite_link() -> None:
    # a loaded machine: the small payload took as long as the big one
    fit = fit_transfers([1024, 64 * 1024, 1 << 20, 4 << 20], [0.9, 0.6, 0.5, 0.4], "gloo")
    assert fit.bandwidth_GBps == pytest.approx((4 << 20) / 0.4 / 1e6)  # the largest payload
    assert fit.transfer_ms(4 << 20) == pytest.approx(0.4)
