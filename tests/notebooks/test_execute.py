"""Every notebook runs top to bottom against the tiny model (each ends with its own asserts),
and is committed without outputs."""

from __future__ import annotations

import time

import pytest
from notebook_paths import NEEDS_EXTRA, NOTEBOOKS, REPO

nbformat = pytest.importorskip("nbformat", reason=NEEDS_EXTRA)
nbclient = pytest.importorskip("nbclient", reason=NEEDS_EXTRA)
pytest.importorskip("ipykernel", reason=NEEDS_EXTRA)
pytest.importorskip("ipywidgets", reason=NEEDS_EXTRA)

NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 120


def test_every_numbered_notebook_is_here() -> None:
    assert [p.name[:2] for p in NOTEBOOK_FILES] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_committed_without_outputs(path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear outputs"
            )
    assert "assert" in nb.cells[-1].source, f"{path.name} must end with an assert cell"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_runs(path, notebook_env, monkeypatch) -> None:
    for key, value in notebook_env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(REPO)}},
    )  # fmt: skip
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    last = nb.cells[-1].outputs
    assert any("ok" in o.get("text", "") for o in last), last
    assert seconds < 60, f"{path.name} took {seconds:.0f} s"
