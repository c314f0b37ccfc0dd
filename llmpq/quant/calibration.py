"""Token ids of a text file, and the calibration windows GPTQ sees.

Usage::

    ids = token_ids_of_file("results/models/default", "results/models/default/data/heldout.txt")
    windows = calibration_windows("results/models/default")   # [32, 512] from data/train.txt

Text is tokenized as the default model's report does (``tokenizer(text)["input_ids"]``, no
special tokens added), with the tokenizer saved next to the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmpq.errors import UserError

TRAIN_TEXT = Path("data") / "train.txt"  # the default model's training split (its own data)
DEFAULT_WINDOWS = 32  # calibration sequences; GPTQ is insensitive above a few dozen
DEFAULT_WINDOW_TOKENS = 512


def token_ids_of_file(model_dir: str | Path, path: str | Path, field: str = "text") -> torch.Tensor:
    """Token ids [T] of the UTF-8 text file ``path``, with the model's own tokenizer."""
    path = Path(path)
    if not path.is_file():
        raise UserError(field, str(path), "give an existing UTF-8 text file", "does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(field, str(path), "give a UTF-8 text file", "is not UTF-8 text") from None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(
            "--model",
            str(model_dir),
            "save the tokenizer next to the model (tokenizer.save_pretrained(DIR))",
            problem="has no tokenizer",
        ) from None
    return torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def calibration_windows(
    model_dir: str | Path,
    text: str | Path | None = None,
    num_windows: int = DEFAULT_WINDOWS,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
) -> torch.Tensor:
    """``num_windows`` windows [W, window_tokens] evenly spaced over the calibration text.

    ``text`` defaults to the model's own training split, ``MODEL/data/train.txt``. Deterministic.
    A text shorter than ``num_windows * window_tokens`` gives overlapping windows; one shorter
    than a window is a UserError.
    """
    path = Path(text) if text is not None else Path(model_dir) / TRAIN_TEXT
    if text is None and not path.is_file():
        raise UserError(
            "calibration text",
            str(path),
            "pass a calibration text file (--calib-text) for this model",
            problem="does not exist (GPTQ needs sample text)",
        )
    ids = token_ids_of_file(model_dir, path, "calibration text")
    if ids.numel() < window_tokens:
        raise UserError(
            "calibration text",
            str(path),
            f"give at least {window_tokens} tokens of text",
            problem=f"has {ids.numel()} tokens",
        )
    starts = torch.linspace(0, ids.numel() - window_tokens, num_windows).long()  # [W]
    return ids[starts[:, None] + torch.arange(window_tokens)]  # [W, window_tokens]
