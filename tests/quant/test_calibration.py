"""Calibration windows and token ids of text files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmpq.errors import UserError
from llmpq.quant.calibration import calibration_windows, token_ids_of_file


def test_windows_come_from_the_training_split(tiny_default: Path) -> None:
    windows = calibration_windows(tiny_default, num_windows=4, window_tokens=64)
    ids = token_ids_of_file(tiny_default, tiny_default / "data" / "train.txt")
    assert windows.shape == (4, 64) and windows.dtype == torch.long
    assert torch.equal(windows[0], ids[:64]) and torch.equal(windows[-1], ids[-64:])
    assert torch.equal(windows, calibration_windows(tiny_default, None, 4, 64))  # deterministic


def test_short_or_missing_calibration_text_is_a_user_error(
    tiny_default: Path, tmp_path: Path
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    with pytest.raises(UserError, match="too short to calibrate"):
        calibration_windows(tiny_default, short, window_tokens=64)
    with pytest.raises(UserError, match="does not exist"):
        calibration_windows(tiny_default, tmp_path / "nothing.txt")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match="--calib-text"):
        calibration_windows(bare)


def test_a_model_without_a_tokenizer_is_a_user_error(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(UserError, match="has no tokenizer"):
        token_ids_of_file(tmp_path, text)
