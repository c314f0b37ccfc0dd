"""ω files: netCDF written atomically, read back with a check that they fit the model.

Usage::

    from llmpq.indicator import load_indicator, save_indicator

    save_indicator(da, "results/indicator/default.nc")            # temp file + rename
    da = load_indicator("results/indicator/default.nc", spec)      # UserError if for another shape

The file holds the DataArray of :mod:`llmpq.indicator.array` as is (attrs included, so a quality
calibration travels with it). A file for another model shape (layer count, hidden size, FFN
width) is a UserError naming both shapes and the command that makes the right file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from llmpq.errors import UserError
from llmpq.files import write_netcdf_atomic
from llmpq.indicator.array import BITS, DIMS, NAME
from llmpq.models.spec import ModelSpec

ENGINE = "h5netcdf"  # as the cost tables


def save_indicator(da: xr.DataArray, path: str | Path) -> Path:
    """Write ``da`` to ``path`` (netCDF) through a temporary file in the same folder and a rename."""
    return write_netcdf_atomic(path, da.rename(NAME), ENGINE)


def _bad(path: Path, problem: str, fix: str) -> UserError:
    return UserError("indicator file", str(path), fix, problem=problem)


def load_indicator(path: str | Path, spec: ModelSpec | None = None) -> xr.DataArray:
    """Read an ω file; with ``spec``, UserError unless it was made for that model shape."""
    path = Path(path)
    remake = "make it with `llmpq indicator --model M --out FILE`"
    if not path.is_file():
        raise _bad(path, "does not exist", remake)
    try:
        with xr.open_dataarray(path, engine=ENGINE) as stored:
            da = stored.load()
    except Exception as err:  # h5py/netCDF raise many kinds for a corrupt file
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise _bad(path, f"is not a readable ω netCDF file ({reason})", remake) from None
    if tuple(da.dims) != DIMS or [int(b) for b in da.bits.values] != list(BITS):
        raise _bad(path, f"has dims {da.dims}, not {DIMS} with bits {list(BITS)}", remake)
    values = da.values
    if not np.isfinite(values).all() or (values < 0).any():
        raise _bad(path, "holds negative or non-finite ω", remake)
    if spec is not None:
        theirs = (da.sizes["layer"], da.attrs.get("hidden_size"), da.attrs.get("ffn_dim"))
        ours = (spec.num_layers, spec.hidden_size, spec.ffn_dim)
        if theirs != ours:
            raise _bad(
                path,
                f"was made for another model shape ({da.attrs.get('model')!r}: {theirs[0]} "
                f"layers, hidden {theirs[1]}, ffn {theirs[2]}; {spec.name!r} has {ours[0]} "
                f"layers, hidden {ours[1]}, ffn {ours[2]})",
                f"make one for this model: llmpq indicator --model {spec.name} --out FILE",
            )
    return da.rename(NAME)
