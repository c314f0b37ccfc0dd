"""The batch to serve: prompts from JSONL or synthetic, tokenized and left-padded to one length.

Usage::

    from llmpq.runtime.prompts import load_prompts, synthetic_prompts, encode, generation_ids

    prompts = load_prompts("prompts.jsonl")       # one {"id": ..., "prompt": ...} per line
    prompts = synthetic_prompts(8, 64, vocab_size=50272, seed=0)      # random token ids
    eos_ids, pad_id = generation_ids("results/models/default")        # as HF generate uses them
    ids, mask = encode(prompts, tokenizer, pad_id)                    # [B, T] each, left-padded

A JSONL line may give ``token_ids`` instead of (or besides) ``prompt``: they are used as they are
(a model without a tokenizer, or exact reproductions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llmpq.errors import UserError


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str = ""
    token_ids: tuple[int, ...] | None = None  # used instead of tokenizing ``text``


def load_prompts(path: str | Path) -> list[Prompt]:
    """Prompts of a JSONL file; UserError naming the line for a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise UserError("prompts file", str(path), "check the path", problem="does not exist")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids = row.get("token_ids")
            if "prompt" not in row and ids is None:
                raise KeyError("prompt")
            prompt = Prompt(str(row["id"]), str(row.get("prompt", "")),
                            None if ids is None else tuple(int(t) for t in ids))  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise UserError(
                f"prompts file {path} line {n}", line[:60],
                'write one {"id": "...", "prompt": "..."} object per line',
                problem=f"is not a prompt ({type(err).__name__}: {err})",
            ) from None  # fmt: skip
        prompts.append(prompt)
    if not prompts:
        raise UserError("prompts file", str(path), "give at least one prompt", "is empty")
    return prompts


def synthetic_prompts(batch_size: int, prompt_len: int, vocab_size: int, seed: int) -> list[Prompt]:
    """``batch_size`` prompts of ``prompt_len`` random token ids (ids 3.. avoid special tokens)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch_size, prompt_len), generator=gen)
    return [Prompt(f"synthetic-{i}", "", tuple(row)) for i, row in enumerate(ids.tolist())]


def load_tokenizer(model_dir: str | Path):
    """The checkpoint's tokenizer, or None when the directory has none."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(model_dir)


def generation_ids(model_dir: str | Path) -> tuple[tuple[int, ...], int]:
    """(eos ids, pad id) as HF ``generate`` takes them: generation config, else model config;
    pad defaults to the first eos id (then 0)."""
    from transformers import AutoConfig, GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_dir))
    eos = gen.eos_token_id
    eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
    pad = gen.pad_token_id
    return eos_ids, int(pad if pad is not None else eos_ids[0] if eos_ids else 0)


def encode(prompts: Sequence[Prompt], tokenizer, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask [B, T], left-padded with ``pad_id`` to the longest prompt."""
    rows = []
    for p in prompts:
        if p.token_ids is not None:
            rows.append(list(p.token_ids))
        elif tokenizer is None:
            raise UserError(
                f"prompt {p.id}", p.text[:40], "give token_ids, or a model with a tokenizer",
                "cannot be tokenized: the model directory has no tokenizer",
            )  # fmt: skip
        else:
            rows.append(tokenizer(p.text)["input_ids"])
        if not rows[-1]:
            raise UserError(f"prompt {p.id}", p.text, "give a non-empty prompt", "has no tokens")
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :] = torch.tensor(r)
        mask[i, T - len(r) :] = 1
    return ids, mask
