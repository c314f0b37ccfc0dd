"""Token ids of a text file, and the calibration windows GPTQ sees.

Usage::

    model_dir = "results/models/default"
    ids = token_ids_of_file(model_dir, "my.txt")               # [T], the model's own tokenizer
    windows = calibration_windows(model_dir)    # [32, 512] from data/calibration.txt or train.txt
    path, ids = model_text_ids(model_dir, None, Path("data/heldout.txt"), "evaluate", "--text", 64)
    # -> the held-out split's ids, or a UserError naming the file and the flag that gives one

Text is tokenized as the default model's report does (``tokenizer(text)["input_ids"]``, no
special tokens added), with the tokenizer saved next to the model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmpq.errors import UserError

TRAIN_TEXT = Path("data") / "train.txt"  # the default model's training split (its own data)
CALIBRATION_TEXT = Path("data") / "calibration.txt"  # an imported model's calibration text


def calibration_split(model_dir: str | Path) -> Path:
    """The model's own calibration text, relative to its folder: ``data/calibration.txt`` (an
    imported model) where it exists, else the default model's ``data/train.txt``."""
    return CALIBRATION_TEXT if (Path(model_dir) / CALIBRATION_TEXT).is_file() else TRAIN_TEXT


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


def model_text_ids(
    model_dir: str | Path,
    text: str | Path | None,
    split: Path,
    purpose: str,
    flag: str,
    min_tokens: int,
) -> tuple[Path, torch.Tensor]:
    """(path, token ids [T]) of ``text``, or of the model's own ``MODEL/split`` file.

    UserError if the file is missing or has fewer than ``min_tokens`` tokens; ``purpose``
    ("evaluate", "calibrate") and ``flag`` (the CLI flag giving a file) word the message.
    """
    path = Path(text) if text is not None else Path(model_dir) / split
    field = "text" if purpose == "evaluate" else "calibration text"
    if text is None and not path.is_file():
        raise UserError(
            field,
            str(path),
            f"pass a text file to {purpose} on ({flag} FILE)",
            problem=f"does not exist (the model has no {split.as_posix()})",
        )
    ids = token_ids_of_file(model_dir, path, field)
    if ids.numel() < min_tokens:
        raise UserError(
            field,
            str(path),
            f"give a text of at least {min_tokens} tokens",
            problem=f"is too short to {purpose} ({ids.numel()} tokens)",
        )
    return path, ids


def calibration_windows(
    model_dir: str | Path,
    text: str | Path | None = None,
    num_windows: int = DEFAULT_WINDOWS,
    window_tokens: int = DEFAULT_WINDOW_TOKENS,
) -> torch.Tensor:
    """``num_windows`` windows [W, window_tokens] evenly spaced over the calibration text.

    ``text`` defaults to the model's own calibration text (:func:`calibration_split`). Deterministic.
    A text shorter than ``num_windows * window_tokens`` gives overlapping windows; one shorter
    than a window is a UserError.
    """
    _, ids = model_text_ids(
        model_dir, text, calibration_split(model_dir), "calibrate", "--calib-text", window_tokens
    )
    starts = torch.linspace(0, ids.numel() - window_tokens, num_windows).long()  # [W]
    return ids[starts[:, None] + torch.arange(window_tokens)]  # [W, window_tokens]
