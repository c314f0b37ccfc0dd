"""A local Hugging Face checkpoint directory, read tensor by tensor.

Used by the stage loader so that a pipeline stage reads only its own weights::

    ckpt = Checkpoint("results/models/opt-tiny")     # UserError if config.json or weights are missing
    config = ckpt.config()                           # transformers PretrainedConfig, local only
    key = ckpt.resolve("decoder.layers.3.fc1.weight")  # -> "model.decoder.layers.3.fc1.weight"
    tensors = ckpt.read([key])                       # opens only the shard that holds the key

Weights must be safetensors: a single ``model.safetensors`` or a sharded checkpoint with
``model.safetensors.index.json``. Stored keys may carry the prefix written by transformers 5
``save_pretrained`` (``model.`` / ``transformer.``) or the bare names of older hub checkpoints
(``decoder.layers.N``, ``h.N``); :meth:`Checkpoint.resolve` maps a logical name to whichever is
stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from llmpq.errors import UserError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Prefixes a stored key may carry before its logical name, tried in this order.
KEY_PREFIXES = ("", "model.", "transformer.")
SAVE_FIX = "point --model at a directory saved with save_pretrained(safe_serialization=True)"


@dataclass(frozen=True)
class Checkpoint:
    """A validated local checkpoint directory (config.json plus safetensors weights)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        _require(self.path, CONFIG_FILE)
        _ = self.files  # validates the weight files

    @cached_property
    def files(self) -> tuple[str, ...]:
        """Weight file names, relative to the directory; UserError if any is missing."""
        if (self.path / INDEX_FILE).is_file():
            shards = tuple(sorted(set(self._index_map.values())))
            for shard in shards:
                _require(self.path, shard, f"(named by {INDEX_FILE})")
            return shards
        _require(self.path, SINGLE_FILE, f"(nor {INDEX_FILE})")
        return (SINGLE_FILE,)

    @cached_property
    def _index_map(self) -> Mapping[str, str]:
        return json.loads((self.path / INDEX_FILE).read_text())["weight_map"]

    @cached_property
    def _file_of(self) -> Mapping[str, str]:
        """Stored key -> the weight file that holds it."""
        if self.files == (SINGLE_FILE,):
            with safe_open(self.path / SINGLE_FILE, framework="pt") as f:
                return {key: SINGLE_FILE for key in f.keys()}
        return dict(self._index_map)

    def config(self) -> PretrainedConfig:
        """The transformers config of this checkpoint (read locally, never from the hub)."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.path, local_files_only=True)

    def config_dict(self) -> dict[str, Any]:
        """The raw contents of config.json."""
        return json.loads((self.path / CONFIG_FILE).read_text())

    def keys(self) -> list[str]:
        """All stored tensor keys, sorted."""
        return sorted(self._file_of)

    def resolve(self, name: str) -> str:
        """The stored key for a logical name such as ``layers.3.mlp.up_proj.weight``."""
        for prefix in KEY_PREFIXES:
            if prefix + name in self._file_of:
                return prefix + name
        raise self._missing(name)

    def read(
        self, keys: Iterable[str], device: str | torch.device = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Read the given stored keys, opening only the weight files that hold them."""
        by_file: dict[str, list[str]] = {}
        for key in keys:
            if key not in self._file_of:
                raise self._missing(key)
            by_file.setdefault(self._file_of[key], []).append(key)
        tensors: dict[str, torch.Tensor] = {}
        for file, file_keys in sorted(by_file.items()):
            with safe_open(self.path / file, framework="pt", device=str(device)) as f:
                tensors.update({key: f.get_tensor(key) for key in file_keys})
        return tensors

    def _missing(self, name: str) -> UserError:
        tried = ", ".join(dict.fromkeys(prefix + name for prefix in KEY_PREFIXES))
        return UserError(
            "checkpoint tensor",
            name,
            "re-save the model with save_pretrained(safe_serialization=True) from a model "
            "that matches config.json",
            problem=f"is missing from {self.path} (looked for {tried})",
        )


def _require(directory: Path, name: str, note: str = "") -> None:
    """UserError unless ``directory/name`` is a file."""
    if not directory.is_dir():
        raise UserError("checkpoint directory", str(directory), SAVE_FIX, problem="does not exist")
    if not (directory / name).is_file():
        problem = f"is missing {name}" + (f" {note}" if note else "")
        raise UserError("checkpoint directory", str(directory), SAVE_FIX, problem=problem)
