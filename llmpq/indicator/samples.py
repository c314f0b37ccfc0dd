"""Calibration samples for the measured indicators: distinct token windows of a text.

Usage::

    from llmpq.indicator.samples import Samples, indicator_samples

    samples = indicator_samples("results/models/default", None, num_windows=16, window_tokens=256)
    samples.windows          # [16, 256] token ids, non-overlapping, evenly spread over the text
    samples.text             # the file they came from (default: MODEL/data/train.txt)

Unlike GPTQ's calibration windows (:func:`llmpq.quant.calibration.calibration_windows`, which
may overlap), an indicator's windows never share tokens: statistics over repeated tokens would
overstate how much text was seen. A text with fewer than ``num_windows * window_tokens`` tokens
is a UserError that says how many it has and how to ask for fewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llmpq.errors import UserError
from llmpq.quant.calibration import calibration_split, model_text_ids


@dataclass(frozen=True, eq=False)
class Samples:
    """Token windows [W, T] of one calibration text."""

    text: Path
    windows: torch.Tensor  # [W, T] int64

    @property
    def tokens(self) -> int:
        return self.windows.numel()


def indicator_samples(
    model_dir: str | Path, text: str | Path | None, num_windows: int, window_tokens: int
) -> Samples:
    """``num_windows`` non-overlapping windows of ``window_tokens`` tokens, evenly spread."""
    for name, value in (("num_windows", num_windows), ("window_tokens", window_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(name, value, "use a positive integer")
    if window_tokens < 2:
        raise UserError("window_tokens", window_tokens, "use at least 2 tokens per window")
    path, ids = model_text_ids(
        model_dir, text, calibration_split(model_dir), "calibrate", "--calib", window_tokens
    )
    needed = num_windows * window_tokens
    if ids.numel() < needed:
        raise UserError(
            "calibration text",
            str(path),
            f"give a longer text, or ask for fewer samples (--num-windows, --window-tokens; "
            f"{ids.numel() // window_tokens} windows of {window_tokens} fit)",
            problem=f"has {ids.numel()} tokens, fewer than the {num_windows} windows x "
            f"{window_tokens} tokens = {needed} requested",
        )
    stride = ids.numel() // num_windows  # >= window_tokens: windows never overlap
    starts = torch.arange(num_windows) * stride  # [W]
    return Samples(path, ids[starts[:, None] + torch.arange(window_tokens)])
