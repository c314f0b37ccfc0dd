"""The built-in default model: a small LLaMA trained here, on text that ships with Python.

Usage::

    from llmpq.models.default import train_default_model

    report = train_default_model("results/models/default")            # ~9 min on 2 CPU cores
    report = train_default_model("/tmp/tiny", preset="tiny")           # a few seconds, for tests
    report.heldout_perplexity, report.unigram_heldout_perplexity

or ``llmpq train-default --out DIR``. The result is an ordinary HF checkpoint, loaded offline by
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``::

    DIR/config.json, model.safetensors (fp32), generation_config.json, tokenizer files
    DIR/data/train.txt        the training split (calibration text for later steps)
    DIR/data/heldout.txt      the held-out split (perplexity); ids = tokenizer(text)["input_ids"]
    DIR/data/documents.json   which documents are in which split
    DIR/llmpq_default.json    the training report (TrainingReport)

Same preset, seed, Python version and thread count on the same machine give identical weights,
unless ``max_train_seconds`` cuts training short. Give it idle cores: next to another busy process,
two threads on two cores run ~20x slower (each OpenMP region waits for the descheduled thread);
pass ``num_threads=1`` there, or the time cap stops training early. Text sources and the split are described in
:mod:`llmpq.models.corpus`; :func:`evaluate_perplexity` and :func:`unigram_perplexity` are
reused by later steps.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from llmpq import allocation
from llmpq.errors import UserError
from llmpq.files import check_out_dir, staging_dir
from llmpq.models.corpus import (
    SPECIAL_TOKENS,
    CorpusSplits,
    build_corpus,
    split_corpus,
    train_tokenizer,
)

REPORT_NAME = "llmpq_default.json"
KERNEL_MULTIPLE = 128  # every linear's in/out features: the quantizers' group size


@dataclass(frozen=True)
class TrainPreset:
    """Shape, data and optimisation of one default-model recipe."""

    # model (LLaMA: RMSNorm, rotary, gated MLP, grouped-query attention, untied LM head)
    vocab_size: int  # BPE vocabulary; a multiple of 128
    hidden_size: int  # a multiple of 128
    intermediate_size: int  # gated-MLP width, ~3x hidden; a multiple of 128
    num_layers: int
    num_heads: int  # head_dim = hidden / heads; 64 keeps sdpa fast
    num_kv_heads: int  # GQA: heads / kv_heads queries share a K/V head; kv*head_dim % 128 == 0
    max_position_embeddings: int  # >= the longest prompt + generation served later (~512)
    # data
    corpus_sources: tuple[str, ...]  # keys of llmpq.models.corpus.SOURCES
    heldout_fraction: float  # of each source's characters, whole documents
    # optimisation: AdamW, linear warm-up then cosine decay to min_lr_ratio * peak_lr
    seq_len_tokens: int  # training window; 512 so positions up to 512 are trained
    batch_sequences: int
    steps: int  # default: 1700 steps take ~570 s on 2 idle AVX-512 cores
    peak_lr: float
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float  # on matrices only, not on norms
    grad_clip_norm: float
    bf16_autocast: bool  # bf16 matmuls with fp32 master weights: ~2.3x faster on AVX512-BF16
    max_train_seconds: float  # wall-clock cap on the training loop; the model is still saved
    eval_batch_sequences: int

    def __post_init__(self) -> None:
        self._check_shapes()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len_tokens * self.batch_sequences

    def _check_shapes(self) -> None:
        widths = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_kv_heads * head_dim": self.num_kv_heads * self.head_dim,
        }
        for field, width in widths.items():
            if width % KERNEL_MULTIPLE:
                raise UserError(f"preset.{field}", width, f"use a multiple of {KERNEL_MULTIPLE}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise UserError(
                "preset.num_heads",
                (self.num_heads, self.num_kv_heads),
                "pick heads dividing hidden_size and kv_heads dividing heads",
            )
        if self.max_position_embeddings < self.seq_len_tokens:
            raise UserError(
                "preset.max_position_embeddings",
                self.max_position_embeddings,
                f"use at least seq_len_tokens = {self.seq_len_tokens}",
            )

    def llama_config(self) -> LlamaConfig:
        pad_id, bos_id, eos_id = range(len(SPECIAL_TOKENS))
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=False,
            pad_token_id=pad_id,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
        )


PRESETS = MappingProxyType(
    {
        "default": TrainPreset(
            vocab_size=4096,
            hidden_size=256,
            intermediate_size=768,
            num_layers=6,
            num_heads=4,
            num_kv_heads=2,
            max_position_embeddings=1024,
            corpus_sources=("pydoc_topics", "stdlib_docstrings"),
            heldout_fraction=0.05,
            seq_len_tokens=512,
            batch_sequences=4,
            steps=1700,
            peak_lr=1e-3,
            warmup_steps=100,
            min_lr_ratio=0.1,
            weight_decay=0.1,
            grad_clip_norm=1.0,
            bf16_autocast=True,
            max_train_seconds=720.0,
            eval_batch_sequences=8,
        ),
        "tiny": TrainPreset(
            vocab_size=512,
            hidden_size=256,
            intermediate_size=512,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            max_position_embeddings=1024,
            corpus_sources=("pydoc_topics",),
            heldout_fraction=0.05,
            seq_len_tokens=64,
            batch_sequences=8,
            steps=60,
            peak_lr=3e-3,
            warmup_steps=5,
            min_lr_ratio=0.1,
            weight_decay=0.1,
            grad_clip_norm=1.0,
            bf16_autocast=True,
            max_train_seconds=120.0,
            eval_batch_sequences=16,
        ),
    }
)


@dataclass(frozen=True)
class SplitSize:
    documents: int
    chars: int
    tokens: int


@dataclass(frozen=True)
class TrainingReport:
    """What ``DIR/llmpq_default.json`` holds."""

    preset_name: str
    preset: dict
    seed: int
    parameter_count: int
    corpus_sources: tuple[str, ...]
    corpus_chars_by_source: dict[str, dict[str, int]]  # source -> split -> characters
    train: SplitSize
    heldout: SplitSize
    steps_done: int
    steps_planned: int
    tokens_seen: int
    stopped_by_time_cap: bool
    train_seconds: float
    wall_seconds: float  # corpus, tokenizer, training, evaluation and saving
    final_train_loss: float  # mean of the last 10 steps
    train_loss_curve: tuple[tuple[int, float], ...]  # (step, mean loss since the previous point)
    heldout_perplexity: float  # fp32 weights, windows of seq_len_tokens, see evaluate_perplexity
    heldout_bits_per_byte: float  # tokenizer-independent: compares vocabularies
    unigram_heldout_perplexity: float  # add-one unigram from the train split
    uniform_perplexity: float  # = vocab_size
    python_version: str
    torch_version: str
    num_threads: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def resolve_preset(preset: str | TrainPreset) -> tuple[str, TrainPreset]:
    """The name and the preset, for a name in PRESETS or a TrainPreset (named "custom")."""
    if isinstance(preset, TrainPreset):
        return "custom", preset
    if preset not in PRESETS:
        raise UserError("preset", preset, f"use one of {sorted(PRESETS)}")
    return preset, PRESETS[preset]


# ---------------------------------------------------------------- evaluation


def _sum_nll(model: PreTrainedModel, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Summed next-token cross-entropy in nats. inputs, targets: [B, S]."""
    device = next(model.parameters()).device
    logits = model(input_ids=inputs.to(device), use_cache=False).logits  # [B, S, V]
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="sum"
    ).item()


def evaluate_perplexity(
    model: PreTrainedModel, token_ids: Sequence[int] | torch.Tensor, seq_len: int, batch: int
) -> float:
    """exp(mean next-token cross-entropy) over ``token_ids``, in non-overlapping windows.

    Window k feeds ``ids[k*seq_len : (k+1)*seq_len]`` and scores the next token at each place,
    so every token but the first is predicted exactly once, with 0 to seq_len - 1 tokens of
    context (the context restarts at each window; the last window may be shorter). Runs the
    model as it is (dtype, device) under ``no_grad``, in eval mode, logits upcast to fp32.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    n_targets = ids.numel() - 1
    if n_targets < 1:
        raise UserError("token_ids", ids.numel(), "give at least 2 tokens", problem="is too short")
    if seq_len < 1 or batch < 1:
        raise UserError("seq_len, batch", (seq_len, batch), "use positive integers")
    n_full = n_targets // seq_len
    inputs = ids[: n_full * seq_len].view(n_full, seq_len)  # [W, S]
    targets = ids[1 : n_full * seq_len + 1].view(n_full, seq_len)  # [W, S]
    tail = ids[n_full * seq_len :]  # the last, shorter window: inputs tail[:-1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            nll = sum(
                _sum_nll(model, inputs[i : i + batch], targets[i : i + batch])
                for i in range(0, n_full, batch)
            )
            if tail.numel() > 1:
                nll += _sum_nll(model, tail[None, :-1], tail[None, 1:])
    finally:
        model.train(was_training)
    return math.exp(nll / n_targets)


def unigram_perplexity(
    train_ids: Sequence[int] | torch.Tensor,
    heldout_ids: Sequence[int] | torch.Tensor,
    vocab_size: int,
) -> float:
    """Perplexity on every held-out token of a unigram fitted to ``train_ids``, add-one smoothed.

    With no training tokens this is the uniform model, whose perplexity is ``vocab_size``.
    """
    train = torch.as_tensor(train_ids, dtype=torch.long).flatten()
    heldout = torch.as_tensor(heldout_ids, dtype=torch.long).flatten()
    if heldout.numel() == 0:
        raise UserError("heldout_ids", 0, "give at least one held-out token", problem="is empty")
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0  # [V]
    if counts.numel() > vocab_size or int(heldout.max()) >= vocab_size:
        raise UserError("vocab_size", vocab_size, "use a size above every token id")
    log_p = counts.log() - counts.sum().log()
    return math.exp(-log_p[heldout].mean().item())


# ---------------------------------------------------------------- training


def lr_factor(step: int, preset: TrainPreset) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine to min_lr_ratio."""
    if step < preset.warmup_steps:
        return (step + 1) / preset.warmup_steps
    progress = (step - preset.warmup_steps) / max(1, preset.steps - preset.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return preset.min_lr_ratio + (1.0 - preset.min_lr_ratio) * cosine


def random_windows(
    ids: torch.Tensor, seq_len: int, batch: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless batches of windows at uniformly random offsets of ``ids``: [batch, seq_len + 1]."""
    if ids.numel() <= seq_len + 1:
        raise UserError("train split tokens", ids.numel(), f"use a corpus above {seq_len + 1}")
    offsets = torch.arange(seq_len + 1)
    while True:
        starts = torch.randint(0, ids.numel() - seq_len, (batch,), generator=generator)
        yield ids[starts[:, None] + offsets]


def _optimizer(model: torch.nn.Module, preset: TrainPreset) -> torch.optim.AdamW:
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": matrices, "weight_decay": preset.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=preset.peak_lr, betas=(0.9, 0.95))


@dataclass(frozen=True)
class _LoopResult:
    steps_done: int
    train_seconds: float
    final_train_loss: float
    loss_curve: tuple[tuple[int, float], ...]


def _train_loop(
    model: LlamaForCausalLM,
    train_ids: torch.Tensor,
    preset: TrainPreset,
    seed: int,
    progress: bool,
) -> _LoopResult:
    optimizer = _optimizer(model, preset)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, preset))
    windows = random_windows(
        train_ids,
        preset.seq_len_tokens,
        preset.batch_sequences,
        torch.Generator().manual_seed(seed),
    )
    curve_every = max(1, preset.steps // 20)
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=preset.steps, desc="train default model", unit="step", disable=not progress)
    for step in range(preset.steps):
        batch = next(windows)  # [B, S + 1]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=preset.bf16_autocast):
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits  # [B, S, V]
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % curve_every == 0:
            curve.append((step + 1, sum(losses[-curve_every:]) / curve_every))
            bar.set_postfix(loss=f"{curve[-1][1]:.3f}")
        bar.update()
        if time.perf_counter() - start > preset.max_train_seconds:
            break  # at least one step is always done
    bar.close()
    return _LoopResult(
        steps_done=len(losses),
        train_seconds=time.perf_counter() - start,
        final_train_loss=sum(losses[-10:]) / max(1, len(losses[-10:])),
        loss_curve=tuple(curve),
    )


# ---------------------------------------------------------------- output folder


@contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_data(data_dir: Path, splits: CorpusSplits) -> None:
    data_dir.mkdir()
    (data_dir / "train.txt").write_text(splits.train_text(), encoding="utf-8")
    (data_dir / "heldout.txt").write_text(splits.heldout_text(), encoding="utf-8")
    keys = {"train": [d.key for d in splits.train], "heldout": [d.key for d in splits.heldout]}
    (data_dir / "documents.json").write_text(json.dumps(keys, indent=1) + "\n")


def _chars_by_source(splits: CorpusSplits) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for split, docs in (("train", splits.train), ("heldout", splits.heldout)):
        for doc in docs:
            table.setdefault(doc.source, {"train": 0, "heldout": 0})[split] += len(doc.text)
    return table


# ---------------------------------------------------------------- the recipe


def train_default_model(
    out_dir: str | Path,
    preset: str | TrainPreset = "default",
    seed: int = 0,
    *,
    overwrite: bool = False,
    max_train_seconds: float | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> TrainingReport:
    """Train the default model and save it, its data splits and its report to ``out_dir``.

    ``preset``: a name in PRESETS or a TrainPreset; ``max_train_seconds`` overrides the
    preset's cap; ``num_threads`` defaults to every core this process may use. Raises UserError
    if ``out_dir`` exists and is not empty, unless ``overwrite``.
    """
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    preset_name, recipe = resolve_preset(preset)
    if max_train_seconds is not None:
        recipe = replace(recipe, max_train_seconds=max_train_seconds)
    check_out_dir(out_dir, overwrite)
    threads = num_threads or allocation.cores()
    with _torch_threads(threads), torch.random.fork_rng(), staging_dir(out_dir, overwrite) as tmp:
        splits = split_corpus(build_corpus(recipe.corpus_sources), recipe.heldout_fraction)
        tokenizer = train_tokenizer(splits.train_text(), recipe.vocab_size)
        train_ids = torch.tensor(tokenizer(splits.train_text())["input_ids"])
        heldout_ids = torch.tensor(tokenizer(splits.heldout_text())["input_ids"])
        torch.manual_seed(seed)
        model = LlamaForCausalLM(recipe.llama_config())
        loop = _train_loop(model, train_ids, recipe, seed, progress)
        heldout_ppl = evaluate_perplexity(
            model, heldout_ids, recipe.seq_len_tokens, recipe.eval_batch_sequences
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_data(tmp / "data", splits)
        heldout_bytes = len(splits.heldout_text().encode("utf-8"))
        report = TrainingReport(
            preset_name=preset_name,
            preset=asdict(recipe),
            seed=seed,
            parameter_count=sum(p.numel() for p in model.parameters()),
            corpus_sources=recipe.corpus_sources,
            corpus_chars_by_source=_chars_by_source(splits),
            train=SplitSize(len(splits.train), len(splits.train_text()), train_ids.numel()),
            heldout=SplitSize(len(splits.heldout), len(splits.heldout_text()), heldout_ids.numel()),
            steps_done=loop.steps_done,
            steps_planned=recipe.steps,
            tokens_seen=loop.steps_done * recipe.tokens_per_step,
            stopped_by_time_cap=loop.steps_done < recipe.steps,
            train_seconds=round(loop.train_seconds, 2),
            wall_seconds=round(time.perf_counter() - wall_start, 2),
            final_train_loss=loop.final_train_loss,
            train_loss_curve=loop.loss_curve,
            heldout_perplexity=heldout_ppl,
            heldout_bits_per_byte=math.log2(heldout_ppl)
            * (heldout_ids.numel() - 1)
            / heldout_bytes,
            unigram_heldout_perplexity=unigram_perplexity(
                train_ids, heldout_ids, recipe.vocab_size
            ),
            uniform_perplexity=float(recipe.vocab_size),
            python_version=platform.python_version(),
            torch_version=torch.__version__,
            num_threads=threads,
        )
        (tmp / REPORT_NAME).write_text(report.to_json())
    return report


def load_report(model_dir: str | Path) -> TrainingReport:
    """The training report of a default-model folder, as written by train_default_model."""
    path = Path(model_dir) / REPORT_NAME
    if not path.is_file():
        raise UserError(
            "model_dir",
            str(model_dir),
            "train it with `llmpq train-default --out DIR`",
            problem=f"has no {REPORT_NAME}",
        )
    raw = json.loads(path.read_text())
    raw["train"], raw["heldout"] = SplitSize(**raw["train"]), SplitSize(**raw["heldout"])
    raw["corpus_sources"] = tuple(raw["corpus_sources"])
    raw["train_loss_curve"] = tuple(tuple(p) for p in raw["train_loss_curve"])
    return TrainingReport(**raw)
