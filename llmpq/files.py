"""Reading user files with one-line errors, and writing results atomically.

Usage::

    data = load_yaml_mapping("config/clusters/x.yaml", what="cluster")   # dict, or UserError
    write_text_atomic("results/plan.json", text)     # temp file + rename: never half-written
    write_netcdf_atomic("results/indicator/m.nc", data_array)   # xarray object, the same way
    with staging_dir(Path("results/models/m"), overwrite=False) as tmp:   # a whole folder
        ...                                                  # written into tmp, renamed at the end
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from llmpq.errors import UserError


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; UserError for a missing file or malformed YAML."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file", str(path), "check the path", problem="does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        reason = getattr(err, "problem", None) or "malformed YAML"
        raise UserError(
            f"{what} file {path}", where, "fix the YAML syntax there", problem=f"has {reason} at"
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f"{what} file {path}",
            type(data).__name__,
            "write a mapping of keys to values at the top level",
            problem="holds no mapping but a",
        )
    return data


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_yaml_atomic(path: str | Path, data: Any) -> Path:
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def write_netcdf_atomic(path: str | Path, data: Any, engine: str = "h5netcdf") -> Path:
    """Write an xarray Dataset or DataArray to ``path`` (netCDF) through a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        data.to_netcdf(tmp, engine=engine)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_out_dir(
    out_dir: Path,
    overwrite: bool,
    field: str = "out_dir",
    flag: str = "overwrite=True (--overwrite)",
) -> None:
    """UserError unless ``out_dir`` is absent, an empty folder, or may be replaced."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(field, str(out_dir), "give a folder path", problem="is a file")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(
            field,
            str(out_dir),
            f"choose a new or empty folder, or pass {flag}",
            problem="exists and is not empty",
        )
    parent = out_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(
            field,
            str(out_dir),
            "choose a folder you may write to",
            problem=f"is under {parent}, not writable",
        )


@contextmanager
def staging_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder next to ``out_dir`` that becomes ``out_dir`` only if the body succeeds.

    An interrupted run leaves at most a hidden ``.NAME.tmp-*`` folder, never a partial out_dir.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        yield staging
        check_out_dir(out_dir, overwrite)  # again: it may have appeared meanwhile
        staging.chmod(0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful rename
