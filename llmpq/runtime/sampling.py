"""Choosing the next token from the last position's logits: greedy, or seeded temperature/top-p.

Usage::

    from llmpq.runtime.sampling import Sampling, next_tokens

    greedy = Sampling()                                       # temperature 0: argmax, as HF
    nucleus = Sampling(temperature=0.8, top_p=0.95, seed=1)
    ids = next_tokens(logits, seq_ids=range(8, 12), step=3, sampling=nucleus)   # [b] int64

Seeded sampling draws each sequence's token from its own generator, seeded by (seed, the
sequence's index in the batch, the generation step): the tokens do not depend on how the batch
is cut into micro-batches or stages, nor on the order in which the micro-batches arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmpq.errors import UserError

SEED_MIX = (1_000_003, 65_537)  # odd multipliers: distinct generator seeds per (seq, step)


@dataclass(frozen=True)
class Sampling:
    """``temperature`` 0 is greedy; otherwise softmax(logits / T) restricted to the top-p mass."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise UserError("temperature", self.temperature, "use 0 (greedy) or a positive number")
        if not 0 < self.top_p <= 1:
            raise UserError("top_p", self.top_p, "use a number in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _generator(sampling: Sampling, seq_id: int, step: int) -> torch.Generator:
    seed = (sampling.seed * SEED_MIX[0] + seq_id * SEED_MIX[1] + step) % (2**63)
    return torch.Generator().manual_seed(seed)


def top_p_probs(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` [b, V] with everything outside the smallest top-``top_p`` set zeroed."""
    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # [b, V]
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly before each token
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the first token always stays
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs)


@torch.no_grad()
def next_tokens(
    logits: torch.Tensor, seq_ids: Sequence[int], step: int, sampling: Sampling
) -> torch.Tensor:
    """Token ids [b] from the last position's ``logits`` [b, V] of sequences ``seq_ids``."""
    logits = logits.float()  # [b, V]
    if sampling.greedy:
        return logits.argmax(-1)
    probs = top_p_probs(torch.softmax(logits / sampling.temperature, dim=-1), sampling.top_p).cpu()
    picks = [
        torch.multinomial(row, 1, generator=_generator(sampling, int(seq), step))
        for row, seq in zip(probs, seq_ids, strict=True)
    ]
    return torch.cat(picks).to(logits.device)
