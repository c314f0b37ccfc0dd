"""The offline artefact: safetensors round trip, per-layer loading, portable packed sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llmpq.errors import UserError
from llmpq.quant.rtn import quantize_rtn
from llmpq.quant.state import QuantizedModel, layer_key


def _qmodel() -> QuantizedModel:
    gen = torch.Generator().manual_seed(0)
    bits = (8, 4, 16, 3)
    weights = {
        layer_key(i, name): quantize_rtn(torch.randn(32, 128, generator=gen), b, 64)
        for i, b in enumerate(bits)
        if b != 16
        for name in ("self_attn.q_proj", "mlp.down_proj")
    }
    return QuantizedModel(bits, 64, "gptq", weights)


def test_round_trip_is_exact(tmp_path: Path) -> None:
    original = _qmodel()
    path = original.save(tmp_path / "sub" / "q.safetensors")
    loaded = QuantizedModel.load(path)
    assert loaded.bits_per_layer == (8, 4, 16, 3) and loaded.group_size == 64
    assert loaded.method == "gptq" and set(loaded.weights) == set(original.weights)
    for key, qw in original.weights.items():
        got = loaded.weights[key]
        assert got.bits == qw.bits and got.group_size == qw.group_size
        assert torch.equal(got.codes, qw.codes) and torch.equal(got.scales, qw.scales)
        assert torch.equal(got.dequantize(), qw.dequantize())
    assert loaded.layer_weights(2) == {}
    assert set(loaded.layer_weights(3)) == {"self_attn.q_proj", "mlp.down_proj"}


def test_file_stores_packed_weights(tmp_path: Path) -> None:
    path = _qmodel().save(tmp_path / "q.safetensors")
    with safe_open(path, framework="pt") as f:
        shapes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}
        assert f.metadata()["format"] == "llmpq.quant/1"
    assert shapes["layers.0.mlp.down_proj.qweight"] == ([32, 128], "I8")
    assert shapes["layers.1.mlp.down_proj.qweight"] == ([32, 64], "U8")  # two codes a byte
    assert shapes["layers.3.mlp.down_proj.qweight"] == ([32, 48], "U8")  # 3 bytes / 8 codes
    assert shapes["layers.3.mlp.down_proj.zeros"] == ([32, 2], "BF16")
    assert "layers.0.mlp.down_proj.zeros" not in shapes


def test_a_stage_reads_only_its_layers(tmp_path: Path) -> None:
    path = _qmodel().save(tmp_path / "q.safetensors")
    part = QuantizedModel.load(path, layers=range(2, 4))
    assert part.bits_per_layer == (8, 4, 16, 3)  # the whole plan, for checks
    assert {k.split(".")[1] for k in part.weights} == {"3"}


def test_foreign_or_missing_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        QuantizedModel.load(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="is not an llmpq.quant/1 safetensors file"):
        QuantizedModel.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_text("not a tensor file")
    with pytest.raises(UserError, match="is not an llmpq.quant/1"):
        QuantizedModel.load(tmp_path / "junk.safetensors")
