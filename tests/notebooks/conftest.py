"""Fixtures of the notebook tests: the environment that points a notebook at the tiny model.

``notebook_env`` (session): the variables the notebooks' parameters cell reads —
``LLMPQ_NB_MODEL`` (the ``tiny_default`` checkpoint), ``LLMPQ_NB_RESULTS`` (a temp dir) — and
one torch thread (tiny shapes run fastest on one, and the CI box has two busy cores).
Test modules that need the ``notebooks`` extra skip themselves (``notebook_paths.NEEDS_EXTRA``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def notebook_env(tiny_default: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    results = tmp_path_factory.mktemp("notebook-results")
    return os.environ | {
        "LLMPQ_NB_MODEL": str(tiny_default),
        "LLMPQ_NB_RESULTS": str(results),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "agg",
    }
