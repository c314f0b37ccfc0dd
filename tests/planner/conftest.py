"""Small planning problems on catalog GPUs with roofline costs (deterministic, no files)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from llmpq.cluster import Cluster
from llmpq.models.spec import model_spec
from llmpq.planner import planning_problem
from llmpq.workload import Workload

BITS = [3, 4, 8, 16]


def omega_array(num_layers: int, per_layer: bool = False, seed: int = 0) -> xr.DataArray:
    row = np.array([4.0, 1.0, 0.05, 0.0])
    om = np.tile(row, (num_layers, 1))
    if per_layer:
        om = om * (0.5 + np.random.default_rng(seed).random((num_layers, 1)))
    return xr.DataArray(
        om, dims=("layer", "bits"), coords={"layer": range(num_layers), "bits": BITS},
        attrs={"method": "test"},
    )  # fmt: skip


def two_gpu_cluster(memory_GiB: float = 2.0) -> Cluster:
    return Cluster.from_dict(
        {
            "name": "two",
            "devices": [
                {"name": "big", "type": "V100-32G", "memory_GiB": memory_GiB * 2, "host": "a"},
                {"name": "small", "type": "T4", "memory_GiB": memory_GiB, "host": "a"},
            ],
        }  # fmt: skip
    )


@pytest.fixture
def small_problem():
    """``small_problem(layers, per_layer=False, theta=50.0, memory_GiB=2.0, **quality)``."""

    def make(layers: int = 4, per_layer: bool = False, theta: float | None = 50.0,
             memory_GiB: float = 2.0, **quality):  # fmt: skip
        spec = replace(model_spec("opt-1.3b"), num_layers=layers, name=f"opt-1.3b-{layers}l")
        if quality:
            theta = None
        return planning_problem(
            spec, two_gpu_cluster(memory_GiB), Workload(8, 128, 16), costs_dir=None,
            indicator=omega_array(layers, per_layer), theta=theta, **quality,
        )  # fmt: skip

    return make
