"""Paths and the skip reason the notebook tests share (a uniquely named module: every test
package has a ``conftest``, so ``from conftest import ...`` would pick whichever came first)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NEEDS_EXTRA = 'needs the notebooks extra: pip install -e ".[notebooks]"'
