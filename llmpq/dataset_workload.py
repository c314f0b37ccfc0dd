"""A dataset workload: how many requests, the distribution of their prompt lengths and limits.

Usage::

    from llmpq.dataset_workload import DatasetWorkload, load_dataset_workload

    d = DatasetWorkload.of("prompts.jsonl", prompt_lens=[12, 80, 40], max_new_tokens=[32, 8, 64])
    d = DatasetWorkload.from_requests("prompts.jsonl", tokenizer, max_new_tokens=64)
    d = load_dataset_workload("config/workloads/chat_mix.yaml")     # histograms
    d.time_shape(16), d.memory_shape(16)      # the Workload a concurrency is planned at
    d.histogram("prompt_lens")                # {"edges": [...], "counts": [...]}

A workload YAML of the dataset form gives histograms instead of one length::

    name: chat-mix
    prompts: 10000
    prompt_len: {values: [32, 128, 512], weights: [5, 3, 2]}
    max_new_tokens: {values: [32, 128], weights: [7, 3]}

The ``prompts`` requests are spread over the values in proportion to the weights (largest
remainders, then interleaved by a fixed-seed shuffle: the same file, the same workload). A
request's output ends at its ``max_new_tokens`` here (end-of-sequence is not known before the
run), so a plan's dataset prediction is an upper bound when sequences may stop early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmpq.errors import UserError
from llmpq.files import load_yaml_mapping
from llmpq.workload import Workload

DATASET_FIELDS = ("prompts", "prompt_len", "max_new_tokens")


@dataclass(frozen=True, eq=False)
class DatasetWorkload:
    """``prompt_lens[i]`` and ``max_new_tokens[i]`` of request ``i`` (read-only arrays)."""

    name: str
    prompt_lens: np.ndarray = field(repr=False)
    max_new_tokens: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, name: str, prompt_lens, max_new_tokens) -> DatasetWorkload:
        p = np.asarray(prompt_lens, dtype=np.int64).reshape(-1)
        g = np.asarray(max_new_tokens, dtype=np.int64).reshape(-1)
        if p.size == 0 or p.shape != g.shape or (p < 1).any() or (g < 1).any():
            raise UserError("dataset", name, "give one positive prompt length and output "
                            "limit per request", "has no requests or a bad length")  # fmt: skip
        p.setflags(write=False)
        g.setflags(write=False)
        return cls(name, p, g)

    @classmethod
    def from_requests(cls, path: str | Path, tokenizer, max_new_tokens: int,
                      max_positions: int | None = None) -> DatasetWorkload:  # fmt: skip
        """The lengths of a prompts file (either form of :mod:`llmpq.runtime.requests`),
        checked line by line as ``serve`` checks them."""
        import tempfile

        from llmpq.runtime.requests import RequestLimits, prepare_requests

        limits = RequestLimits(max_positions, max_new_tokens)
        with tempfile.TemporaryDirectory() as tmp:
            s = prepare_requests(path, tokenizer, limits, Path(tmp) / "requests.jsonl")
        return cls.of(Path(path).name, s.prompt_lens, s.max_new_tokens)

    @property
    def count(self) -> int:
        return int(self.prompt_lens.size)

    @property
    def generated_tokens(self) -> int:
        """Tokens generated if every request runs to its limit."""
        return int(self.max_new_tokens.sum())

    def time_shape(self, concurrency: int) -> Workload:
        """The fixed shape a concurrency's stages are priced at: mean lengths."""
        return Workload(concurrency, max(1, round(float(self.prompt_lens.mean()))),
                        max(1, round(float(self.max_new_tokens.mean()))), self.name)  # fmt: skip

    def memory_shape(self, concurrency: int) -> Workload:
        """The fixed shape memory is checked at: every slot at the longest prompt + limit."""
        p_max = int(self.prompt_lens.max())
        ctx = int((self.prompt_lens + self.max_new_tokens).max())
        return Workload(concurrency, p_max, max(1, ctx - p_max), self.name)

    def histogram(self, which: str, bins: int = 16) -> dict[str, list]:
        values = getattr(self, which)
        counts, edges = np.histogram(values, bins=min(bins, max(1, np.unique(values).size)))
        return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def length_summary(values) -> dict[str, float]:
    """min / mean / p50 / p90 / max of a set of lengths (empty: {})."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {}
    return {"min": float(v.min()), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "max": float(v.max())}  # fmt: skip


def _spread(name: str, spec, count: int) -> np.ndarray:
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return np.full(count, spec, dtype=np.int64)
    if not isinstance(spec, dict) or "values" not in spec:
        raise UserError(f"workload.{name}", spec, "give a positive integer or {values: [...], "
                        "weights: [...]}")  # fmt: skip
    values = spec["values"]
    weights = spec.get("weights", [1] * len(values) if isinstance(values, list) else None)
    ok = (isinstance(values, list) and values and isinstance(weights, list)
          and len(weights) == len(values)
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
          and all(isinstance(w, (int, float)) and w >= 0 for w in weights) and sum(weights) > 0)  # fmt: skip
    if not ok:
        raise UserError(f"workload.{name}", spec, "give values: positive integers and weights: "
                        "as many non-negative numbers, not all zero")  # fmt: skip
    share = np.asarray(weights, dtype=np.float64) / sum(weights) * count
    n = np.floor(share).astype(np.int64)
    n[np.argsort(-(share - n), kind="stable")[: count - n.sum()]] += 1  # largest remainders
    out = np.repeat(np.asarray(values, dtype=np.int64), n)
    return np.random.default_rng(0).permutation(out)


def dataset_workload_from_dict(data: dict, default_name: str) -> DatasetWorkload:
    unknown = sorted(set(data) - {*DATASET_FIELDS, "name"})
    if unknown:
        raise UserError("workload key", unknown[0], f"use only {', '.join(DATASET_FIELDS)} and "
                        "name", problem="is unknown")  # fmt: skip
    count = data.get("prompts")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError("workload.prompts", count, "give the number of requests (e.g. 10000)")
    name = str(data.get("name", default_name))
    return DatasetWorkload.of(
        name, _spread("prompt_len", data.get("prompt_len"), count),
        _spread("max_new_tokens", data.get("max_new_tokens"), count),
    )  # fmt: skip


def is_dataset_form(data: dict) -> bool:
    return "prompts" in data


def load_dataset_workload(path: str | Path) -> DatasetWorkload:
    """Read a dataset workload YAML (``prompts`` and length histograms)."""
    data = load_yaml_mapping(path, "workload")
    return dataset_workload_from_dict(data, Path(path).stem)


def load_any_workload(path: str | Path) -> Workload | DatasetWorkload:
    """A workload YAML of either form: one fixed shape, or a dataset (``prompts`` and length
    histograms)."""
    from llmpq.workload import load_workload

    data = load_yaml_mapping(path, "workload")
    if is_dataset_form(data):
        return dataset_workload_from_dict(data, Path(path).stem)
    return load_workload(path)


def requests_workload(path: str | Path, model_dir: str | Path,
                      max_new_tokens: int) -> DatasetWorkload:  # fmt: skip
    """The lengths of a prompts file tokenized by the checkpoint at ``model_dir``."""
    from llmpq.models.checkpoint import Checkpoint
    from llmpq.runtime.dataset import max_positions
    from llmpq.runtime.prompts import load_tokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError("--model", str(model_dir), "give a checkpoint directory with a tokenizer "
                        "to plan for --prompts, or a dataset workload YAML",
                        "is not a local checkpoint")  # fmt: skip
    tokenizer = load_tokenizer(model_dir)
    config = Checkpoint(model_dir).config_dict()
    return DatasetWorkload.from_requests(path, tokenizer, max_new_tokens, max_positions(config))
