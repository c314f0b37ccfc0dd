"""The cost-table contract: build, save atomically, load, and one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from llmpq.costmodel.tables import (
    PART_VARIABLES,
    build_cost_table,
    cost_table_path,
    load_cost_table,
    save_cost_table,
    table_spec,
)
from llmpq.errors import UserError
from llmpq.models.spec import model_spec

SPEC = model_spec("opt-125m")
BITS, BATCH, SEQ = (4, 16), (1, 2, 4), (8, 16)


def _table(device_type: str = "T4") -> xr.Dataset:
    layer = np.arange(2 * 2 * 3 * 2, dtype=float).reshape(2, 2, 3, 2) + 1.0
    parts = {name: np.ones((2, 3, 2)) for name in PART_VARIABLES}
    return build_cost_table(
        layer, parts, bits=BITS, batch=BATCH, seq=SEQ, spec=SPEC, device_type=device_type,
        source="measured", attrs={"threads": 1},
    )  # fmt: skip


def test_build_names_dims_units_and_provenance() -> None:
    table = _table()
    assert table.layer_ms.dims == ("bits", "phase", "batch", "seq")
    assert table.layer_ms.attrs["units"] == "ms" and table.head_ms.attrs["units"] == "ms"
    assert table.layer_ms.sel(bits=16, phase="decode", batch=4, seq=16).item() == 24.0
    assert table.attrs["source"] == "measured" and table.attrs["device_type"] == "T4"
    assert table_spec(table) == SPEC
    assert json.loads(table.attrs["grid"])["batch"] == list(BATCH)


def test_save_load_round_trip_is_atomic(tmp_path: Path) -> None:
    path = cost_table_path(tmp_path, "T4", SPEC.name)
    assert path == tmp_path / "T4" / "opt-125m.nc"
    save_cost_table(_table(), path)
    loaded = load_cost_table(path, spec=SPEC, device_type="T4")
    xr.testing.assert_identical(loaded, _table().assign_attrs(date=loaded.attrs["date"]))
    assert [p.name for p in path.parent.iterdir()] == ["opt-125m.nc"]  # no temp file left


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        load_cost_table(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_corrupt_missing_and_mismatched_files_name_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"\x89HDF\r\n garbage")
    assert "not a readable netCDF" in _error(corrupt)
    assert "does not exist" in _error(tmp_path / "missing.nc")

    good = save_cost_table(_table(), tmp_path / "good.nc")
    other = model_spec("opt-350m")
    assert "another model shape" in _error(good, spec=other)
    assert "device type 'T4', not 'A10'" in _error(good, device_type="A10")
    renamed = SPEC.renamed("my-opt")
    assert load_cost_table(good, spec=renamed).attrs["model"] == "opt-125m"  # names may differ


def test_a_table_without_a_dimension_or_variable_is_refused(tmp_path: Path) -> None:
    no_seq = save_cost_table(_table().isel(seq=0, drop=True), tmp_path / "no_seq.nc")
    assert "lacks the dimension 'seq'" in _error(no_seq)
    no_head = save_cost_table(_table().drop_vars("head_ms"), tmp_path / "no_head.nc")
    assert "lacks the variable 'head_ms'" in _error(no_head)
    bad_source = save_cost_table(_table().assign_attrs(source="guess"), tmp_path / "src.nc")
    assert "source 'guess'" in _error(bad_source)
