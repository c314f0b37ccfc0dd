"""Artifacts built once per test run and shared by every pytest-xdist worker.

Usage (the root conftest's session fixtures ``tiny_default`` and ``smollm2`` use it)::

    from shared_artifacts import shared_build

    path = shared_build(tmp_path_factory, "tiny-default", lambda out: train(out))

``tests/`` is on ``sys.path`` in a pytest run (the root conftest's folder).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def shared_build(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """``<run temp>/shared/<name>``, made by ``build(path)`` once per test run: the first worker
    to take the lock builds it, the others wait and reuse it (a marker file says it is complete;
    a build that failed half-way is removed and made again). Without xdist the run's temp
    folder is this process's own."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # popen-gw0, popen-gw1, ... share their parent
    out = root / "shared" / name
    done = out.parent / f"{name}.done"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            done.touch()
    return out
