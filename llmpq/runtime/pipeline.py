"""One stage's part of the schedule (:mod:`llmpq.runtime.schedule`), over any transport.

Usage::

    from llmpq.runtime.pipeline import StagePipeline, Batch

    batch = Batch(input_ids, attention_mask, eos_ids=(2,), pad_id=1)   # [B, T], left-padded
    run = StagePipeline(stage, schedule, batch, transport, sampling)
    result = run.run()            # StageResult: busy/prefill/decode seconds, tokens on stage 0

Every stage knows the whole batch's padding mask (it builds its own positions and masks), only
the first stage uses the token ids. The first stage drives the ring: it sends the prefill
micro-batches, collects the first tokens, sends the decode micro-batches and feeds each one
again as its tokens return, and finally sends STOP. The other stages answer whatever arrives:
a prefill or decode micro-batch (run the layers; the last stage also the head and sampling,
returning token ids to the first stage) or STOP (pass it on, end).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmpq.models.stage import PipelineStage, StepInputs
from llmpq.runtime.kvcache import cache_bytes, concat_caches, split_cache
from llmpq.runtime.sampling import Sampling, next_tokens
from llmpq.runtime.schedule import Schedule, Slice
from llmpq.runtime.transport import DECODE, PREFILL, STOP, Message


@dataclass(frozen=True, eq=False)
class Batch:
    """The prompts, left-padded to one length, and how sequences end."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]: 1 real token, 0 left padding
    eos_ids: tuple[int, ...] = ()  # empty: never stop early
    pad_id: int = 0  # fed (and recorded) after a sequence's end-of-sequence token

    @property
    def prompt_len(self) -> int:
        return self.input_ids.shape[1]


@dataclass(frozen=True)
class StageResult:
    """What one stage measured; ``tokens`` [B, gen_len] (pad after a sequence's end) on stage 0."""

    busy_s: float  # compute: layers, head, sampling, cache regrouping
    prefill_busy_s: float  # of which prefill passes and the regrouping after them
    prefill_s: float  # start to the last first token (stage 0) or to the last prefill sent
    decode_s: float  # from then to the end
    kv_cache_bytes: int  # this stage's caches at the end of decode
    micro_batches: int  # forward passes run
    tokens: torch.Tensor | None = None
    lengths: tuple[int, ...] = ()  # generated tokens per sequence, end-of-sequence included


@dataclass
class _DecodeGroup:
    """A decode micro-batch on one stage: its sequences, cache and last step."""

    seqs: Slice
    cache: object
    step: StepInputs
    generated: int = 1  # tokens per sequence so far (the prefill one)
    finished: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))


class StagePipeline:
    """The schedule loop of stage ``transport.rank`` of ``transport.world``."""

    def __init__(
        self,
        stage: PipelineStage,
        schedule: Schedule,
        batch: Batch,
        transport,
        sampling: Sampling | None = None,
        sync: Callable[[], None] = lambda: None,
    ) -> None:
        self.stage, self.schedule, self.batch, self.transport = stage, schedule, batch, transport
        self.sampling, self.sync = sampling or Sampling(), sync
        self.device = stage.device
        self.mask = batch.attention_mask.to(self.device)
        self.ids = batch.input_ids.to(self.device)
        self.eos = torch.tensor(batch.eos_ids, dtype=torch.long, device=self.device)
        self.prefill_caches: list = []
        self.groups: list[_DecodeGroup] = []
        self.busy_s = 0.0
        self.prefill_busy_s = 0.0
        self.forwards = 0

    @property
    def is_first(self) -> bool:
        return self.stage.stage_range.is_first

    @property
    def is_last(self) -> bool:
        return self.stage.stage_range.is_last

    # -- compute ---------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, kind: int, mb: int, x: torch.Tensor) -> Message:
        """Run micro-batch ``mb`` of phase ``kind`` on input ``x``; the message to send on."""
        start = time.perf_counter()
        if kind == PREFILL:
            s, e = self.schedule.prefill_slices[mb]
            cache = self.stage.new_cache()
            self.prefill_caches.append(cache)
            step, token_step = StepInputs.from_mask(self.mask[s:e], self.batch.prompt_len), 0
        else:
            group = self.groups[mb]
            group.step = step = group.step.next()
            cache, (s, e), token_step = group.cache, group.seqs, group.generated
            group.generated += 1
        out = self.stage(x, step, cache, logits_to_keep=1)  # hidden [b, q, H] or logits [b, 1, V]
        if self.is_last:
            out = next_tokens(out[:, -1], range(s, e), token_step, self.sampling)  # [b]
        self.sync()
        seconds = time.perf_counter() - start
        self.busy_s += seconds
        self.prefill_busy_s += seconds if kind == PREFILL else 0.0
        self.forwards += 1
        return Message(kind, mb, out)

    def _regroup(self) -> None:
        """Prefill caches -> one cache per decode micro-batch (after this stage's last prefill)."""
        start = time.perf_counter()
        layer_ids = self.stage.stage_range.layer_ids
        whole = concat_caches(self.stage.new_cache(), self.prefill_caches, layer_ids)
        self.prefill_caches = []
        slices = self.schedule.decode_slices
        caches = split_cache(whole, slices, self.stage.new_cache, layer_ids)
        T = self.batch.prompt_len
        self.groups = [
            _DecodeGroup((s, e), c, StepInputs.from_mask(self.mask[s:e], T))
            for (s, e), c in zip(slices, caches, strict=True)
        ]
        seconds = time.perf_counter() - start
        self.busy_s += seconds
        self.prefill_busy_s += seconds

    # -- the loops -------------------------------------------------------------------------
    def run(self) -> StageResult:
        return self._run_first() if self.is_first else self._run_other()

    def _run_other(self) -> StageResult:
        start = time.perf_counter()
        prefill_end = None
        last_prefill = len(self.schedule.prefill_slices) - 1
        while True:
            msg = self.transport.recv()
            if msg.kind == STOP:
                if not self.is_last:
                    self.transport.send(msg)
                break
            self.transport.send(self._forward(msg.kind, msg.micro_batch, msg.payload))
            if msg.kind == PREFILL and msg.micro_batch == last_prefill:
                self._regroup()
                prefill_end = time.perf_counter()
        self.transport.close()
        end = time.perf_counter()
        prefill_end = prefill_end or end
        return StageResult(
            self.busy_s, self.prefill_busy_s, prefill_end - start, end - prefill_end,
            self._kv_bytes(), self.forwards,
        )  # fmt: skip

    def _run_first(self) -> StageResult:
        B, gen_len = self.schedule.batch_size, self.schedule.gen_len
        tokens = torch.full((B, gen_len), self.batch.pad_id, dtype=torch.long)
        start = time.perf_counter()
        for mb, (s, e) in enumerate(self.schedule.prefill_slices):
            self.transport.send(self._forward(PREFILL, mb, self.ids[s:e]))
        for _ in self.schedule.prefill_slices:  # first tokens, in micro-batch order
            msg = self._recv_tokens(PREFILL)
            s, e = self.schedule.prefill_slices[msg.micro_batch]
            tokens[s:e, 0] = msg.payload.cpu()
        prefill_end = time.perf_counter()
        self._regroup()
        active = 0
        for mb, group in enumerate(self.groups):
            s, e = group.seqs
            group.finished = torch.isin(tokens[s:e, 0], self.eos.cpu())
            if gen_len > 1 and not group.finished.all():
                self.transport.send(self._forward(DECODE, mb, tokens[s:e, :1].to(self.device)))
                active += 1
        while active:
            msg = self._recv_tokens(DECODE)
            group = self.groups[msg.micro_batch]
            (s, e), col = group.seqs, group.generated - 1
            new = msg.payload.cpu().masked_fill(group.finished, self.batch.pad_id)  # [b]
            tokens[s:e, col] = new
            group.finished = group.finished | torch.isin(new, self.eos.cpu())
            if group.generated == gen_len or group.finished.all():
                active -= 1
                continue
            self.transport.send(
                self._forward(DECODE, msg.micro_batch, new[:, None].to(self.device))
            )
        if self.transport.world > 1:
            self.transport.send(Message(STOP))
        self.transport.close()
        end = time.perf_counter()
        return StageResult(
            self.busy_s, self.prefill_busy_s, prefill_end - start, end - prefill_end,
            self._kv_bytes(), self.forwards, tokens, _lengths(tokens, self.batch.eos_ids),
        )  # fmt: skip

    def _recv_tokens(self, kind: int) -> Message:
        msg = self.transport.recv()
        if msg.kind != kind:
            raise RuntimeError(f"stage 0 expected {kind} tokens, got message kind {msg.kind}")
        return msg

    def _kv_bytes(self) -> int:
        layer_ids = self.stage.stage_range.layer_ids
        return sum(cache_bytes(g.cache, layer_ids) for g in self.groups)


def _lengths(tokens: torch.Tensor, eos_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Generated tokens per sequence: up to and including its first end-of-sequence token."""
    lengths = []
    for row in tokens.tolist():
        ends = [i for i, t in enumerate(row) if t in eos_ids]
        lengths.append(ends[0] + 1 if ends else len(row))
    return tuple(lengths)
