"""The built-in default model, on the `tiny` preset: a checkpoint like any other, reproducible."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from llmpq.errors import UserError
from llmpq.models import default
from llmpq.models.corpus import build_corpus, split_corpus
from llmpq.models.default import (
    KERNEL_MULTIPLE,
    PRESETS,
    REPORT_NAME,
    TrainPreset,
    evaluate_perplexity,
    load_report,
    train_default_model,
    unigram_perplexity,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# One thread: the same thread count everywhere (reproducible bits), and tiny shapes gain little
# from a second one while they suffer when the cores are oversubscribed.
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("default") / "tiny"
    train_default_model(out, preset="tiny", seed=0, progress=False, num_threads=1)
    return out


def _random_llama(vocab_size: int = 256) -> LlamaForCausalLM:
    preset = replace(PRESETS["tiny"], vocab_size=vocab_size, num_layers=1)
    torch.manual_seed(1)
    return LlamaForCausalLM(preset.llama_config())


# ------------------------------------------------------------------ presets


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_suits_the_quantized_kernels(name: str) -> None:
    preset = PRESETS[name]
    config = preset.llama_config()
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query attention
    assert not config.tie_word_embeddings
    assert config.max_position_embeddings >= 1024
    linears = [m for m in LlamaForCausalLM(config).modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 7 * preset.num_layers + 1  # q k v o gate up down, LM head
    for linear in linears:
        assert linear.in_features % KERNEL_MULTIPLE == 0
        assert linear.out_features % KERNEL_MULTIPLE == 0


def test_a_preset_with_unquantizable_shapes_is_refused() -> None:
    with pytest.raises(UserError, match="hidden_size"):
        replace(PRESETS["tiny"], hidden_size=200, num_heads=5, num_kv_heads=5)
    with pytest.raises(UserError, match="num_kv_heads"):
        replace(PRESETS["tiny"], num_kv_heads=1)  # K/V width 64
    with pytest.raises(UserError, match="preset"):
        train_default_model("unused", preset="huge")


# ------------------------------------------------------------------ perplexity functions


def test_unigram_perplexity_by_hand() -> None:
    vocab = 7
    assert unigram_perplexity([], [0, 3, 6], vocab) == pytest.approx(vocab)  # uniform
    assert unigram_perplexity(list(range(vocab)) * 3, [1, 2], vocab) == pytest.approx(vocab)
    # counts + 1 = [3, 2, 1] -> p = [1/2, 1/3, 1/6]; ppl of [0, 1] = (1/2 * 1/3) ** -1/2
    assert unigram_perplexity([0, 0, 1], [0, 1], 3) == pytest.approx(math.sqrt(6))
    with pytest.raises(UserError):
        unigram_perplexity([0], [5], 3)


def test_model_with_constant_logits_has_vocab_size_perplexity() -> None:
    model = _random_llama(vocab_size=256)
    torch.nn.init.zeros_(model.lm_head.weight)
    ids = torch.randint(0, 256, (300,), generator=torch.Generator().manual_seed(0))
    assert evaluate_perplexity(model, ids, seq_len=64, batch=3) == pytest.approx(256, rel=1e-5)


def test_model_perplexity_is_exp_of_mean_cross_entropy() -> None:
    model = _random_llama()
    ids = torch.randint(0, 256, (2 * 50 + 13,), generator=torch.Generator().manual_seed(0))
    # independently: HF's own shifted loss, per window of 50 targets (+1 input token)
    windows = [ids[0:51], ids[50:101], ids[100:113]]
    with torch.no_grad():
        nll = sum(model(input_ids=w[None], labels=w[None]).loss * (len(w) - 1) for w in windows)
    expected = math.exp(nll.item() / (len(ids) - 1))
    assert evaluate_perplexity(model, ids, seq_len=50, batch=2) == pytest.approx(expected, rel=1e-5)
    assert model.training  # mode restored


# ------------------------------------------------------------------ the saved checkpoint


def test_checkpoint_loads_offline_like_any_other(tiny: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert isinstance(model, LlamaForCausalLM)
    assert model.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {
        p.name for p in tiny.iterdir()
    }
    prompt = tokenizer("def main():", return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


def test_tokenizer_round_trips_any_text(tiny: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    text = "Tabs\tand  spaces,\nnew lines\n\n, unicode: naïve café ∑ 🙂 and </s> text."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)


def test_report_matches_the_saved_files(tiny: Path) -> None:
    report = load_report(tiny)
    raw = json.loads((tiny / REPORT_NAME).read_text())
    assert raw["preset_name"] == "tiny" and raw["seed"] == 0
    model = AutoModelForCausalLM.from_pretrained(tiny)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert report.parameter_count == sum(p.numel() for p in model.parameters())
    assert report.steps_done == PRESETS["tiny"].steps and not report.stopped_by_time_cap
    assert report.tokens_seen == report.steps_done * PRESETS["tiny"].tokens_per_step
    heldout_ids = tokenizer((tiny / "data" / "heldout.txt").read_text())["input_ids"]
    assert len(heldout_ids) == report.heldout.tokens
    seq_len = PRESETS["tiny"].seq_len_tokens
    ppl = evaluate_perplexity(model, heldout_ids, seq_len=seq_len, batch=16)
    assert ppl == pytest.approx(report.heldout_perplexity, rel=1e-4)


def test_tiny_model_beats_the_unigram_baseline(tiny: Path) -> None:
    report = load_report(tiny)
    assert report.unigram_heldout_perplexity < report.uniform_perplexity
    assert report.heldout_perplexity < report.unigram_heldout_perplexity


def test_splits_are_disjoint_and_deterministic(tiny: Path) -> None:
    keys = json.loads((tiny / "data" / "documents.json").read_text())
    assert keys["heldout"] and not set(keys["train"]) & set(keys["heldout"])
    docs = build_corpus(PRESETS["tiny"].corpus_sources)
    again = split_corpus(tuple(reversed(docs)), PRESETS["tiny"].heldout_fraction)
    assert sorted(d.key for d in again.heldout) == sorted(keys["heldout"])
    splits = split_corpus(docs, PRESETS["tiny"].heldout_fraction)
    assert (tiny / "data" / "train.txt").read_text() == splits.train_text()
    assert (tiny / "data" / "heldout.txt").read_text() == splits.heldout_text()
    train_text = splits.train_text()
    assert not any(d.text in train_text for d in splits.heldout)
    heldout_chars = sum(len(d.text) for d in splits.heldout)
    assert 0.04 < heldout_chars / (heldout_chars + len(train_text)) < 0.1


# ------------------------------------------------------------------ reproducibility and safety


def test_same_seed_gives_identical_files_and_overwrite_replaces(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    out.mkdir()
    (out / "stale.txt").write_text("from an older run")
    with pytest.raises(UserError, match="not empty"):
        train_default_model(out, preset="tiny", progress=False, num_threads=1)
    train_default_model(out, preset="tiny", seed=0, overwrite=True, progress=False, num_threads=1)
    assert not (out / "stale.txt").exists()
    for name in ("model.safetensors", "tokenizer.json", "data/heldout.txt"):
        assert (out / name).read_bytes() == (tiny / name).read_bytes(), name


def test_existing_file_as_out_dir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        train_default_model(target, preset="tiny", progress=False, num_threads=1)


def test_interrupted_run_leaves_no_out_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(default, "_train_loop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_default_model(tmp_path / "model", preset="tiny", progress=False, num_threads=1)
    assert list(tmp_path.iterdir()) == []


def test_time_cap_stops_early_and_still_saves_a_model(tmp_path: Path) -> None:
    preset = replace(PRESETS["tiny"], steps=1000)
    report = train_default_model(
        tmp_path / "capped", preset=preset, max_train_seconds=0.0, progress=False, num_threads=1
    )
    assert report.steps_done == 1 and report.stopped_by_time_cap
    assert report.preset_name == "custom"
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "capped").config.vocab_size == 512


def test_preset_type_is_a_frozen_dataclass() -> None:
    with pytest.raises(AttributeError):
        PRESETS["default"].steps = 1  # type: ignore[misc]
    assert isinstance(PRESETS["default"], TrainPreset)
    assert PRESETS["default"].tokens_per_step == 512 * 4
