"""Small HTML tables for ``_repr_html_``: a bare notebook cell shows a readable table.

Usage::

    from llmpq.html import html_table, mib, runs

    html_table(["device", "memory"], [["t4-0", mib(16 * 1024**3)]], caption="cluster t4x3")
    runs([4, 4, 8, 16, 16])          # '4×2, 8, 16×2': a stage's bits, run-length encoded

Plain strings only (no IPython, no ipywidgets): the domain objects stay importable anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

MiB = 1024**2

TABLE_STYLE = "border-collapse:collapse;font-size:0.9em"
CELL_STYLE = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def html_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], caption: str | None = None
) -> str:
    """A ``<table>`` with one header row; cells are escaped ``str()`` of the values."""
    head = "".join(f"<th style='{CELL_STYLE}'>{escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='{CELL_STYLE}'>{escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption style='text-align:left'>{escape(caption)}</caption>" if caption else ""
    return f"<table style='{TABLE_STYLE}'>{cap}<tr>{head}</tr>{body}</table>"


def mib(size_bytes: float) -> str:
    """Bytes as MiB with a precision that suits the size (``'13.6 MiB'``, ``'16384 MiB'``)."""
    value = size_bytes / MiB
    return f"{value:.0f} MiB" if value >= 100 else f"{value:.3g} MiB"


def runs(values: Sequence[object]) -> str:
    """Run-length encoding of a sequence: ``[4, 4, 8]`` → ``'4×2, 8'``."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append(f"{values[i]}×{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return ", ".join(out) or "—"
