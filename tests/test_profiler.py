"""The profiler: a tiny sweep on this CPU gives a contract-conforming, plausible cost table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmpq.costmodel.latency import LatencyModel
from llmpq.costmodel.tables import check_cost_table
from llmpq.errors import UserError
from llmpq.models.default import train_default_model
from llmpq.profiler import ProfileGrid, default_grid, local_device_type, profile_model

TINY_GRID = ProfileGrid(bits=(4, 16), batch=(1, 4), seq=(4, 128), repeats=2, rounds=2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profiler") / "tiny"
    train_default_model(out, preset="tiny", max_train_seconds=0, progress=False, num_threads=1)
    return out


def test_a_tiny_sweep_gives_a_plausible_table(model_dir: Path) -> None:
    table = profile_model(model_dir, grid=TINY_GRID, progress=False)
    check_cost_table(table, "<test>")
    assert table.attrs["source"] == "measured" and table.attrs["device_type"] == "cpu"
    assert table.attrs["threads"] == 1 and table.attrs["torch_version"] == torch.__version__
    assert table.attrs["stack_layers"] == 2 and table.attrs["weights"] == "checkpoint"
    for name in ("layer_ms", "embed_ms", "head_ms", "stage_ms"):
        values = table[name].values
        assert np.isfinite(values).all() and (values > 0).all(), name
    prefill = table.layer_ms.sel(phase="prefill")
    assert (prefill.sel(batch=4, seq=128) > 3 * prefill.sel(batch=1, seq=4)).all()
    model = LatencyModel.from_table(table)
    assert model.layer_ms(4, "decode", 2, 64) > 0


def test_a_shape_name_is_timed_with_random_weights() -> None:
    grid = ProfileGrid(bits=(16,), batch=(1,), seq=(8,), repeats=1, rounds=1, warmup=0)
    table = profile_model("opt-125m", grid=grid, stack_layers=1, progress=False)
    assert table.attrs["weights"] == "random (shape only)" and table.attrs["model"] == "opt-125m"
    assert (table.layer_ms > 0).all()


def test_grids_and_devices() -> None:
    assert default_grid("cpu").batch == (1, 2, 4, 8, 16) and 64 in default_grid("cpu").seq
    assert default_grid("cpu").points == 4 * 5 * 5
    assert local_device_type("cpu") == "cpu"
    with pytest.raises(UserError, match="grid.bits"):
        ProfileGrid(bits=(5,))
    with pytest.raises(UserError, match="grid.batch"):
        ProfileGrid(batch=(0, 2))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="cuda"):
            local_device_type("cuda")


def test_clock_cpu_needs_one_thread(model_dir: Path) -> None:
    with pytest.raises(UserError, match="--clock"):
        profile_model(model_dir, grid=TINY_GRID, threads=2, clock="cpu", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep(model_dir: Path) -> None:
    table = profile_model(model_dir, "cuda", grid=TINY_GRID, progress=False)
    assert table.attrs["activation_dtype"] == "float16" and (table.layer_ms > 0).all()


@pytest.mark.slow
def test_default_grid_of_the_default_model_fits(default_model: Path) -> None:
    # thread CPU time: the fit check must not depend on what else runs on the machine
    table = profile_model(default_model, clock="cpu", progress=False)
    assert table.attrs["profile_seconds"] > 0  # recorded; how long it takes is not asserted
    model = LatencyModel.from_table(table)
    # fit error on the grid; held-out error is bench/costmodel_accuracy.py's job
    assert max(f.fit_mape_pct for f in model.layer_fits.values()) < 10
