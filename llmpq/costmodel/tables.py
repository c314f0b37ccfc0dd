"""The cost-table contract: an xarray Dataset of per-layer latencies, saved as netCDF.

Usage::

    from llmpq.costmodel.tables import load_cost_table, save_cost_table, cost_table_path

    table = load_cost_table("results/costs/cpu/default.nc", spec=spec, device_type="cpu")
    table.layer_ms.sel(bits=4, phase="decode", batch=8, seq=64).item()   # ms per decoder layer
    save_cost_table(table, cost_table_path("results/costs", "T4", "opt-30b"))   # atomic

One table holds one device type and one model shape (``results/costs/<device_type>/<model>.nc``):

* dims: ``bits`` (3, 4, 8, 16), ``phase`` ("prefill", "decode"), ``batch`` (sequences in the
  micro-batch) and ``seq``: the prompt length for prefill; for decode the context, i.e. the
  tokens already in the KV cache when one new token per sequence is processed.
* ``layer_ms(bits, phase, batch, seq)``: one decoder layer with its linears at ``bits``.
* ``embed_ms(phase, batch, seq)``: the first stage's embeddings; ``head_ms(phase, batch, seq)``:
  the last stage's final norm and LM head (logits of the last position only, as generation
  needs); ``stage_ms(phase, batch, seq)``: the fixed work of any stage besides its layers (masks,
  rotary or ALiBi tables). All in milliseconds (``units`` attr); NaN where not measured.
* attrs: ``source`` (measured | roofline | fitted), ``device_type``, ``device_name``, ``model``,
  ``model_shape`` (the ModelSpec as JSON), ``torch_version``, ``threads``, ``date``, ``grid``
  (JSON), ``schema`` and whatever the producer adds (warm-up, repeats, efficiency factors).

Bad files raise :class:`~llmpq.errors.UserError` naming the file and what is wrong.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from llmpq.errors import UserError
from llmpq.files import write_netcdf_atomic
from llmpq.models.spec import SUPPORTED_BITS, ModelSpec

SCHEMA = "llmpq.costs/1"
PHASES = ("prefill", "decode")
SOURCES = ("measured", "roofline", "fitted")
DIMS = ("bits", "phase", "batch", "seq")
PART_DIMS = ("phase", "batch", "seq")
PART_VARIABLES = ("embed_ms", "head_ms", "stage_ms")
ENGINE = "h5netcdf"
SEQ_MEANING = "prefill: prompt length; decode: tokens already in the KV cache"
LONG_NAMES = {
    "layer_ms": "latency of one decoder layer",
    "embed_ms": "latency of the embeddings (first stage)",
    "head_ms": "latency of the final norm and LM head, last position (last stage)",
    "stage_ms": "fixed latency of a stage besides its layers (masks, position tables)",
}


def cost_table_path(costs_dir: str | Path, device_type: str, model: str) -> Path:
    """``<costs_dir>/<device_type>/<model>.nc``, the data-flow location of a table."""
    return Path(costs_dir) / device_type / f"{model}.nc"


def build_cost_table(
    layer_ms: np.ndarray,
    parts_ms: Mapping[str, np.ndarray],
    *,
    bits: Sequence[int],
    batch: Sequence[int],
    seq: Sequence[int],
    spec: ModelSpec,
    device_type: str,
    source: str,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """A contract-conforming Dataset from arrays.

    ``layer_ms``: [bits, phase, batch, seq]; ``parts_ms``: ``embed_ms``, ``head_ms`` and
    ``stage_ms``, each [phase, batch, seq] (phases in the order of ``PHASES``).
    """
    coords = {
        "bits": np.asarray(bits, dtype=np.int64),
        "phase": np.asarray(PHASES),
        "batch": np.asarray(batch, dtype=np.int64),
        "seq": np.asarray(seq, dtype=np.int64),
    }
    data = {"layer_ms": (DIMS, np.asarray(layer_ms, dtype=np.float64))}
    data |= {name: (PART_DIMS, np.asarray(parts_ms[name], np.float64)) for name in PART_VARIABLES}
    ds = xr.Dataset(data, coords=coords)
    for name in data:
        ds[name].attrs = {"units": "ms", "long_name": LONG_NAMES[name]}
    ds["batch"].attrs = {"units": "sequences", "long_name": "micro-batch size"}
    ds["seq"].attrs = {"units": "tokens", "long_name": SEQ_MEANING}
    ds["bits"].attrs = {"units": "bits", "long_name": "weight bitwidth of the layer's linears"}
    ds.attrs = {
        "schema": SCHEMA,
        "source": source,
        "device_type": device_type,
        "model": spec.name,
        "model_shape": json.dumps(spec.to_dict(), sort_keys=True),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "grid": json.dumps({"bits": list(bits), "batch": list(batch), "seq": list(seq)}),
        "seq_meaning": SEQ_MEANING,
        **{k: str(v) if isinstance(v, str) else v for k, v in (attrs or {}).items()},
    }  # str(): netCDF takes plain str, not subclasses such as torch's version string
    check_cost_table(ds, "<in memory>")
    return ds


def save_cost_table(table: xr.Dataset, path: str | Path) -> Path:
    """Write ``table`` to ``path`` (netCDF, h5netcdf engine) through a temp file and a rename."""
    return write_netcdf_atomic(path, table, ENGINE)


def _bad(path: str | Path, problem: str, fix: str) -> UserError:
    return UserError("cost table", str(path), fix, problem=problem)


def load_cost_table(
    path: str | Path, spec: ModelSpec | None = None, device_type: str | None = None
) -> xr.Dataset:
    """Read and check a table; with ``spec``/``device_type`` also check that it was made for them.

    UserError (naming the file) when it is missing, not netCDF, lacks a dimension or variable,
    or was made for another model shape or device type.
    """
    path = Path(path)
    if not path.is_file():
        raise _bad(path, "does not exist", "run `llmpq profile` or `llmpq roofline` to make it")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            table = ds.load()
    except Exception as err:  # h5py/netCDF raise many kinds for a corrupt file
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise _bad(
            path, f"is not a readable netCDF file ({reason})", "profile again to rewrite it"
        ) from None
    check_cost_table(table, path)
    if spec is not None:
        check_model_shape(table, spec, path)
    if device_type is not None and table.attrs["device_type"] != device_type:
        raise _bad(
            path,
            f"was made for device type {table.attrs['device_type']!r}, not {device_type!r}",
            f"use the table under results/costs/{device_type}/ or profile that device",
        )
    return table


def check_cost_table(table: xr.Dataset, path: str | Path) -> None:
    """UserError unless ``table`` has the contract's dims, variables, coordinates and attrs."""
    for dim in DIMS:
        if dim not in table.dims:
            raise _bad(path, f"lacks the dimension {dim!r}", f"a cost table needs dims {DIMS}")
    for name, dims in [("layer_ms", DIMS), *((n, PART_DIMS) for n in PART_VARIABLES)]:
        if name not in table.data_vars:
            raise _bad(path, f"lacks the variable {name!r}", "profile again to rewrite it")
        if tuple(table[name].dims) != dims:
            raise _bad(path, f"has {name} over {table[name].dims}, not {dims}", "rewrite it")
    phases = [str(p) for p in table.phase.values]
    if sorted(phases) != sorted(PHASES):
        raise _bad(path, f"has phases {phases}", f"a cost table has phases {list(PHASES)}")
    bad_bits = [int(b) for b in table.bits.values if int(b) not in SUPPORTED_BITS]
    if bad_bits:
        raise _bad(path, f"has bits {bad_bits}", f"use bits from {list(SUPPORTED_BITS)}")
    for dim in ("batch", "seq"):
        values = table[dim].values
        if len(values) == 0 or (values <= 0).any():
            raise _bad(path, f"has {dim} values {values.tolist()}", "use positive integers")
    for key in ("source", "device_type", "model_shape"):
        if key not in table.attrs:
            raise _bad(path, f"lacks the attribute {key!r}", "profile again to rewrite it")
    if table.attrs["source"] not in SOURCES:
        raise _bad(path, f"has source {table.attrs['source']!r}", f"use one of {list(SOURCES)}")
    values = table.layer_ms.values
    if np.isnan(values).all() or (values[~np.isnan(values)] < 0).any():
        raise _bad(path, "holds no latencies or negative ones", "profile again to rewrite it")


def table_spec(table: xr.Dataset) -> ModelSpec:
    """The ModelSpec the table was made for."""
    return ModelSpec.from_dict(json.loads(table.attrs["model_shape"]))


def check_model_shape(table: xr.Dataset, spec: ModelSpec, path: str | Path) -> None:
    """UserError unless the table's model shape equals ``spec`` (names may differ)."""
    try:
        theirs = json.loads(table.attrs["model_shape"])
    except (KeyError, json.JSONDecodeError):
        raise _bad(path, "has an unreadable model_shape attribute", "profile again") from None
    ours = spec.to_dict()
    differing = [k for k in ours if k != "name" and theirs.get(k) != ours[k]]
    if differing:
        k = differing[0]
        raise _bad(
            path,
            f"was made for another model shape ({k} = {theirs.get(k)!r}, this model has "
            f"{ours[k]!r})",
            f"profile {spec.name} (llmpq profile / llmpq roofline --model {spec.name})",
        )
