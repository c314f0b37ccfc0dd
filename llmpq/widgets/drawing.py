"""What every view shares: bit colours, figures without pyplot, and writing into an ``Output``.

Usage::

    from llmpq.widgets.drawing import BIT_COLORS, new_figure, show, show_error, run_guarded

    fig = new_figure(8, 3)                       # a matplotlib Figure, no pyplot state
    show(out, fig, "<b>caption</b>")             # replaces what the Output widget shows
    result = run_guarded(out, lambda: make_plan(problem))   # UserError -> its line, in place

Figures are rendered to PNG and placed in the ``Output`` widget's ``outputs`` in one assignment
(no ipympl, no flicker, and it works without a kernel, which the tests rely on).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import TypeVar

from matplotlib.figure import Figure

from llmpq.errors import UserError

T = TypeVar("T")

# weight bitwidth -> colour: warm for aggressive quantization, cool for near-lossless
BIT_COLORS = MappingProxyType({3: "#d7301f", 4: "#fc8d59", 8: "#91bfdb", 16: "#4575b4"})
ERROR_STYLE = "color:#b00020;font-family:monospace;white-space:pre-wrap"
DPI = 80  # small PNGs: a re-plan redraws in a few tens of milliseconds


def new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure with a constrained layout, detached from pyplot (nothing leaks between cells)."""
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _display_item(item: Figure | str) -> dict:
    if isinstance(item, Figure):
        data = {"image/png": base64.b64encode(png_bytes(item)).decode("ascii"),
                "text/plain": "<Figure>"}  # fmt: skip
    else:
        data = {"text/html": item, "text/plain": html.unescape(re.sub("<[^>]+>", "", item))}
    return {"output_type": "display_data", "data": data, "metadata": {}}


def show(out, *items: Figure | str) -> None:
    """Make ``out`` (an ``ipywidgets.Output``) show ``items``: Figures or HTML strings."""
    out.outputs = tuple(_display_item(item) for item in items)


def error_html(message: str) -> str:
    return f"<div class='llmpq-error' style='{ERROR_STYLE}'>{html.escape(message)}</div>"


def show_error(out, message: str) -> None:
    """The one-line reason, in place of the plot."""
    show(out, error_html(message))


def error_message(err: Exception) -> str:
    """A UserError's own line; anything else with its type, so a bug is still visible."""
    return str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"


def run_guarded(out, compute: Callable[[], T]) -> tuple[T | None, str | None]:
    """``(compute(), None)``, or ``(None, reason)`` with the reason shown in ``out``.

    A widget callback must not raise: the kernel would only log it, and the view would go
    stale without saying why.
    """
    try:
        return compute(), None
    except Exception as err:  # noqa: BLE001 - shown to the user, the kernel keeps working
        message = error_message(err)
        show_error(out, message)
        return None, message
