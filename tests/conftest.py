"""Fixtures every test package shares.

* ``one_thread`` (module scope): tiny shapes run fastest on one thread, and a busy 2-core box
  makes two threads crawl. Autouse it in a module with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
* ``tiny_default`` (session): the default model's recipe on the ``tiny`` preset, stopped after
  one step (LLaMA, GQA, hidden 256, 2 layers, vocab 512; with its tokenizer and data splits).
* ``default_model`` (session): the trained default model at ``results/models/default``; the test
  is skipped, with the command that makes it, when it is absent (a fresh CI checkout).
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "results" / "models" / "default"


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmpq.models.default import train_default_model

    out = tmp_path_factory.mktemp("tiny-default") / "tiny-default"
    with single_thread():
        train_default_model(out, preset="tiny", max_train_seconds=0, progress=False, num_threads=1)
    return out


@pytest.fixture(scope="session")
def default_model() -> Path:
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("needs the default model: llmpq train-default --out results/models/default")
    return DEFAULT_MODEL
