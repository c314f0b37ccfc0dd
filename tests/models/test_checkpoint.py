"""Checkpoint: validation with file-naming errors, prefix resolution, reads of single keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llmpq.errors import UserError
from llmpq.models.checkpoint import Checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, make_tiny) -> tuple[torch.nn.Module, Path, Path]:
    """The tiny OPT saved twice: (model, single-file directory, sharded directory)."""
    single, sharded = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("sharded")
    model = make_tiny("opt", single).model
    model.save_pretrained(sharded, max_shard_size="20KB")
    return model, single, sharded


def copy_without(source: Path, target: Path, missing: str) -> Path:
    shutil.copytree(source, target)
    (target / missing).unlink()
    return target


def test_reads_config_and_keys(saved):
    model, single, _ = saved
    ckpt = Checkpoint(single)
    assert ckpt.config().model_type == "opt"
    assert ckpt.config_dict()["num_hidden_layers"] == 4
    assert ckpt.files == ("model.safetensors",)
    assert "model.decoder.layers.3.fc1.weight" in ckpt.keys()


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_resolve_and_read_return_the_stored_tensor(saved, layout):
    model, single, sharded = saved
    ckpt = Checkpoint(single if layout == "single" else sharded)
    key = ckpt.resolve("decoder.layers.2.self_attn.q_proj.weight")
    assert key == "model.decoder.layers.2.self_attn.q_proj.weight"
    (tensor,) = ckpt.read([key]).values()
    assert torch.equal(tensor, model.model.decoder.layers[2].self_attn.q_proj.weight)


def test_sharded_checkpoint_lists_its_shards(saved):
    _, _, sharded = saved
    ckpt = Checkpoint(sharded)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(ckpt.files) == set(index["weight_map"].values())
    assert ckpt.keys() == sorted(index["weight_map"])


def test_unknown_tensor_names_what_was_looked_for(saved):
    ckpt = Checkpoint(saved[1])
    with pytest.raises(UserError, match=r"decoder\.layers\.9\.fc1\.weight.*model\.decoder"):
        ckpt.resolve("decoder.layers.9.fc1.weight")
    with pytest.raises(UserError, match="layers.9"):
        ckpt.read(["model.decoder.layers.9.fc1.weight"])


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_file_is_named_with_the_fix(saved, tmp_path, missing):
    directory = copy_without(saved[1], tmp_path / "ckpt", missing)
    with pytest.raises(UserError) as error:
        Checkpoint(directory)
    message = str(error.value)
    assert f"is missing {missing}" in message and str(directory) in message
    assert "save_pretrained(safe_serialization=True)" in message


def test_missing_shard_is_named(saved, tmp_path):
    _, _, sharded = saved
    shard = sorted(p.name for p in sharded.glob("model-*.safetensors"))[1]
    directory = copy_without(sharded, tmp_path / "ckpt", shard)
    with pytest.raises(UserError, match=f"is missing {shard}"):
        Checkpoint(directory)


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Checkpoint(tmp_path / "nowhere")
