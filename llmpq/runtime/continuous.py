"""The dataset schedule: every request of a file through the stage ring, slots refilled as they free.

Usage (each stage runs one; :func:`llmpq.runtime.worker.run_dataset_stage` sets it up)::

    from llmpq.runtime.continuous import ContinuousPipeline, Slots

    run = ContinuousPipeline(stage, Slots(prefill_size=4, decode_size=8, decode_count=2),
                             transport, eos_ids=(2,), pad_id=0,
                             requests=iter_requests(path), on_finish=log_it)   # stage 0 only
    report = run.run()        # busy seconds, makespan, prompts and tokens (stage 0)

**What runs.** The plan's ``decode_count`` decode micro-batches are *slot groups* of
``decode_size`` sequences each: ``decode_count × decode_size`` sequences are in flight (the
concurrency the planner chose). Every stage keeps, per group, one KV cache of its layers and
the group's padding mask; sequences of one group are left-padded to the group's longest and the
columns no sequence uses any more are cut off, so a group's cache never outgrows its longest
live context.

The first stage drives. When a group's tokens come back it records them, writes every sequence
that ended (end-of-sequence or its own limit: ``on_finish``), and sends, in this order,

1. a **decode** micro-batch of the group's rows, then
2. **admit** micro-batches of newcomers for the freed slots, ``prefill_size`` prompts each:
   every stage prefills them into a fresh cache and writes each one *into the slot* of a
   sequence that ended (its row of the group's cache: only that row is written), or appends it
   while the group has fewer than ``decode_size`` rows; the last stage samples their first
   tokens.

A row that ended is computed once more in the decode micro-batch that precedes its
replacement (a dense batch cannot skip it without copying the whole cache); rows that ended
with no newcomer left to take them are dropped (the message names the rows to keep, and every
stage compacts its cache): the draining tail computes live rows only.

Why this design: a group's survivors never wait for its newcomers' prefill (both are in flight
together, FIFO through every stage), prefill of newcomers fills the bubbles between other
groups' decode steps instead of stopping the ring, and no stage needs more than its own
group caches. Newcomers are taken from a lookahead window of the (lazily read) requests: the
oldest waiting one and those closest to it in prompt length, so an admit micro-batch carries
little padding and no request waits behind more than the window.

``refill=False`` is the one-batch-at-a-time mode (the paper's): the next
``decode_count × decode_size`` requests are admitted only once the ring has drained.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from llmpq.admission import Slots, Window, lookahead_of
from llmpq.models.stage import PipelineStage, StepInputs
from llmpq.runtime.requests import Request
from llmpq.runtime.sampling import Sampling, next_tokens
from llmpq.runtime.transport import DECODE, PREFILL, STOP, Message

KEEP_ALL = -1  # the meta's keep count when no row is dropped
PER_NEW = 6  # meta words per admitted sequence: slot, length, index, seed, temperature, top_p
APPEND = -1  # an admitted sequence's slot when it gets a new row


def meta_words(prefill_size: int, decode_size: int) -> int:
    """The most control words a message carries: the keep list, then an admit's fields."""
    return 2 + decode_size + PER_NEW * prefill_size


def _f2i(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(x)))[0]


def _i2f(i: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(i)))[0]


@dataclass
class _Group:
    """One slot group on one stage: its cache, mask and per-row sampling state."""

    cache: object | None = None
    mask: torch.Tensor | None = None  # [b, L] long
    seq: list[int] = field(default_factory=list)  # request index per row
    step: list[int] = field(default_factory=list)  # tokens generated per row
    sampling: list[Sampling] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.seq)


def _layers(cache, layer_ids: range):
    return [cache.layers[i] for i in layer_ids]


def _trim(group: _Group, layer_ids: range) -> None:
    """Cut the leading columns no row uses (every row's mask 0 there)."""
    if group.mask is None or group.rows == 0:
        return
    used = group.mask.any(dim=0).nonzero()
    cut = int(used[0]) if used.numel() else group.mask.shape[1]
    if cut == 0:
        return
    group.mask = group.mask[:, cut:]
    for layer in _layers(group.cache, layer_ids):
        layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]


def _keep(group: _Group, keep: list[int] | None, layer_ids: range) -> None:
    """Keep only rows ``keep`` (None: all) of the group, on every layer of this stage."""
    if keep is None or keep == list(range(group.rows)):
        return
    group.seq = [group.seq[i] for i in keep]
    group.step = [group.step[i] for i in keep]
    group.sampling = [group.sampling[i] for i in keep]
    if not keep:
        group.cache, group.mask = None, None
        return
    index = torch.tensor(keep, dtype=torch.long, device=group.mask.device)
    group.mask = group.mask[index]
    for layer in _layers(group.cache, layer_ids):
        layer.keys, layer.values = layer.keys[index], layer.values[index]
    _trim(group, layer_ids)


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    extra = length - t.shape[dim]
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _place(group: _Group, cache, mask: torch.Tensor, slots: list[int], layer_ids: range) -> None:
    """Write newcomer ``i`` (row ``i`` of ``cache``/``mask``) into row ``slots[i]`` of the
    group, or append it where the slot is APPEND; left-padded to one length."""
    into = [i for i, r in enumerate(slots) if r != APPEND]
    if into and group.cache is not None:
        if mask.shape[1] > group.mask.shape[1]:  # a longer newcomer: every row padded (rare)
            length = mask.shape[1]
            group.mask = _left_pad(group.mask, length, 1)
            for layer in _layers(group.cache, layer_ids):
                layer.keys = _left_pad(layer.keys, length, 2)
                layer.values = _left_pad(layer.values, length, 2)
        length = group.mask.shape[1]
        src = torch.tensor(into, dtype=torch.long, device=mask.device)
        dst = torch.tensor([slots[i] for i in into], dtype=torch.long, device=mask.device)
        group.mask[dst] = _left_pad(mask[src], length, 1)
        for mine, new in zip(_layers(group.cache, layer_ids), _layers(cache, layer_ids),
                             strict=True):  # fmt: skip
            mine.keys[dst] = _left_pad(new.keys[src], length, 2)
            mine.values[dst] = _left_pad(new.values[src], length, 2)
    rest = [i for i, r in enumerate(slots) if r == APPEND or group.cache is None]
    if rest:
        if len(rest) < len(slots):
            index = torch.tensor(rest, dtype=torch.long, device=mask.device)
            mask = mask[index]
            for layer in _layers(cache, layer_ids):
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        _append(group, cache, mask, layer_ids)
    _trim(group, layer_ids)


def _append(group: _Group, cache, mask: torch.Tensor, layer_ids: range) -> None:
    """Append the rows of ``cache``/``mask`` to the group, both left-padded to one length."""
    if group.rows == 0 or group.cache is None:
        group.cache, group.mask = cache, mask
        return
    length = max(group.mask.shape[1], mask.shape[1])
    group.mask = torch.cat([_left_pad(group.mask, length, 1), _left_pad(mask, length, 1)])
    for mine, new in zip(_layers(group.cache, layer_ids), _layers(cache, layer_ids), strict=True):
        mine.keys = torch.cat([_left_pad(mine.keys, length, 2), _left_pad(new.keys, length, 2)])
        mine.values = torch.cat(
            [_left_pad(mine.values, length, 2), _left_pad(new.values, length, 2)]
        )


def sample_rows(logits: torch.Tensor, seq: list[int], step: list[int],
                sampling: list[Sampling]) -> torch.Tensor:  # fmt: skip
    """Token ids [b]: each row by its own sampling (greedy rows in one argmax)."""
    out = logits.float().argmax(-1)
    for i, s in enumerate(sampling):
        if not s.greedy:
            out[i] = next_tokens(logits[i : i + 1], [seq[i]], step[i], s)[0]
    return out


@dataclass
class _Seq:
    """The first stage's record of one request in flight."""

    request: Request
    tokens: list[int] = field(default_factory=list)
    done: str | None = None  # finish reason once ended
    written: bool = False


class ContinuousPipeline:
    """The dataset schedule loop of stage ``transport.rank`` of ``transport.world``."""

    def __init__(
        self,
        stage: PipelineStage,
        slots: Slots,
        transport,
        *,
        eos_ids: tuple[int, ...] = (),
        pad_id: int = 0,
        requests: Iterator[Request] | None = None,
        on_finish: Callable[[Request, list[int], str], None] = lambda r, t, why: None,
        refill: bool = True,
        lookahead: int | None = None,
        sync: Callable[[], None] = lambda: None,
    ) -> None:
        self.stage, self.slots, self.transport = stage, slots, transport
        self.eos, self.pad_id, self.refill, self.sync = set(eos_ids), pad_id, refill, sync
        self.on_finish = on_finish
        self.layer_ids = stage.stage_range.layer_ids
        self.device = stage.device
        self.groups = [_Group() for _ in range(slots.decode_count)]
        self.window = None
        if requests is not None:
            self.window = Window(requests, lookahead or lookahead_of(slots))
        self.busy_s = self.prefill_busy_s = 0.0
        self.forwards = 0
        self.peak_kv_bytes = 0
        self.prompts = self.generated = 0

    # -- every stage -----------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, msg: Message) -> Message:
        """Apply ``msg`` to its group on this stage; the message to send on."""
        start = time.perf_counter()
        group = self.groups[msg.micro_batch]
        meta = list(msg.meta)
        n_keep = meta[0]
        keep = None if n_keep == KEEP_ALL else meta[1 : 1 + n_keep]
        rest = meta[1 + max(n_keep, 0) :]
        _keep(group, keep, self.layer_ids)
        x = msg.payload.to(self.device)
        if msg.kind == PREFILL:
            n_new = rest[0]
            fields = [rest[1 + i * PER_NEW : 1 + (i + 1) * PER_NEW] for i in range(n_new)]
            T = x.shape[1]
            mask = torch.zeros(n_new, T, dtype=torch.long, device=self.device)
            for i, f in enumerate(fields):
                mask[i, T - f[1] :] = 1
            seq = [f[2] for f in fields]
            sampling = [Sampling(_i2f(f[4]), _i2f(f[5]), f[3]) for f in fields]
            cache = self.stage.new_cache()
            out = self.stage(x, StepInputs.from_mask(mask, T), cache, logits_to_keep=1)
            if self.stage.stage_range.is_last:
                out = sample_rows(out[:, -1], seq, [0] * n_new, sampling)
            slots = [f[0] for f in fields]
            _place(group, cache, mask, slots, self.layer_ids)
            for i, r in enumerate(slots):  # the same order as _place: slots first, then appends
                if r != APPEND:
                    group.seq[r], group.step[r], group.sampling[r] = seq[i], 1, sampling[i]
            for i, r in enumerate(slots):
                if r == APPEND:
                    group.seq.append(seq[i])
                    group.step.append(1)
                    group.sampling.append(sampling[i])
        else:
            step = StepInputs.from_mask(group.mask, 0).next()
            out = self.stage(x, step, group.cache, logits_to_keep=1)
            group.mask = step.attention_mask_2d
            if self.stage.stage_range.is_last:
                out = sample_rows(out[:, -1], group.seq, group.step, group.sampling)
            group.step = [s + 1 for s in group.step]
        self.sync()
        seconds = time.perf_counter() - start
        self.busy_s += seconds
        self.prefill_busy_s += seconds if msg.kind == PREFILL else 0.0
        self.forwards += 1
        self.peak_kv_bytes = max(self.peak_kv_bytes, self._kv_bytes())
        return Message(msg.kind, msg.micro_batch, out, msg.meta)

    def _kv_bytes(self) -> int:
        total = 0
        for g in self.groups:
            if g.cache is not None:
                for layer in _layers(g.cache, self.layer_ids):
                    total += layer.keys.numel() * layer.keys.element_size() * 2
        return total

    def run(self) -> dict:
        start = time.perf_counter()
        if self.stage.stage_range.is_first:
            self._drive()
        else:
            while True:
                msg = self.transport.recv()
                if msg.kind == STOP:
                    if not self.stage.stage_range.is_last:
                        self.transport.send(msg)
                    break
                self.transport.send(self._forward(msg))
        self.transport.close()
        return {
            "busy_s": self.busy_s, "prefill_busy_s": self.prefill_busy_s,
            "decode_busy_s": self.busy_s - self.prefill_busy_s,
            "makespan_s": time.perf_counter() - start, "forward_passes": self.forwards,
            "kv_cache_bytes": self.peak_kv_bytes, "prompts": self.prompts,
            "generated_tokens": self.generated,
        }  # fmt: skip

    # -- the first stage -------------------------------------------------------------------
    def _send(self, kind: int, g: int, keep: list[int] | None, payload, meta_tail=()) -> None:
        meta = ([KEEP_ALL] if keep is None else [len(keep), *keep]) + list(meta_tail)
        self.transport.send(self._forward(Message(kind, g, payload, tuple(meta))))

    def _admit(self, g: int, keep: list[int] | None, newcomers: list[Request],
               rows: list, awaiting: deque) -> None:  # fmt: skip
        """Admit micro-batches: newcomers into the slots of rows that ended, then new rows."""
        size = self.slots.prefill_size
        free = [i for i, s in enumerate(rows) if s.done]
        for k in range(0, len(newcomers), size):
            chunk = newcomers[k : k + size]
            T = max(len(r.token_ids) for r in chunk)
            ids = torch.full((len(chunk), T), self.pad_id, dtype=torch.long)
            tail, seqs = [len(chunk)], []
            for i, r in enumerate(chunk):
                ids[i, T - len(r.token_ids) :] = torch.tensor(r.token_ids)
                slot = free.pop(0) if free else APPEND
                s = r.sampling
                tail += [slot, len(r.token_ids), r.index, s.seed, _f2i(s.temperature),
                         _f2i(s.top_p)]  # fmt: skip
                seqs.append((slot, _Seq(r)))
            self._send(PREFILL, g, keep, ids, tail)
            keep = None
            for slot, seq in seqs:
                if slot == APPEND:
                    rows.append(seq)
                else:
                    rows[slot] = seq
            awaiting.append([seq for _, seq in seqs])

    def _finish(self, seq: _Seq) -> None:
        seq.written = True
        self.prompts += 1
        self.generated += len(seq.tokens)
        self.on_finish(seq.request, seq.tokens, seq.done)

    def _advance(self, g: int, rows: list[_Seq], awaiting: deque, take: int) -> list[_Seq]:
        """The group's replies are all in: write the ended, send the group's decode micro-batch
        and up to ``take`` newcomers; the rows the stages hold for the group afterwards."""
        for s in rows:
            if s.done and not s.written:
                self._finish(s)
        dead = sum(s.done is not None for s in rows)
        free = dead + self.slots.decode_size - len(rows)
        newcomers = self.window.take(min(take, free)) if take and self.window is not None else []
        keep, held = None, rows
        if dead and not newcomers:  # nothing to refill them with: drop the ended rows
            keep = [i for i, s in enumerate(rows) if not s.done]
            rows = [rows[i] for i in keep]
        if not rows and not newcomers:
            return held  # nothing sent: the stages drop these rows with the next message
        if any(not s.done for s in rows):
            last = torch.tensor([self.pad_id if s.done else s.tokens[-1] for s in rows],
                                dtype=torch.long)  # fmt: skip
            self._send(DECODE, g, keep, last[:, None])
            awaiting.append([None if s.done else s for s in rows])
            keep = None
        rows = list(rows)
        if newcomers:
            self._admit(g, keep, newcomers, rows, awaiting)
        return rows

    def _drive(self) -> None:
        C = self.slots.decode_size
        rows: list[list[_Seq]] = [[] for _ in self.groups]
        awaiting: list[deque] = [deque() for _ in self.groups]
        while True:
            if not any(awaiting):  # the ring is empty: start (the next) batch, or end
                for g in range(len(self.groups)):
                    rows[g] = self._advance(g, rows[g], awaiting[g], C)
                if not any(awaiting):
                    break
            msg = self.transport.recv()
            g = msg.micro_batch
            for s, t in zip(awaiting[g].popleft(), msg.payload.tolist(), strict=True):
                if s is None:  # a row that had ended: computed, not kept
                    continue
                s.tokens.append(int(t))
                if int(t) in self.eos:
                    s.done = "stop"
                elif len(s.tokens) >= s.request.max_new_tokens:
                    s.done = "length"
            if awaiting[g]:
                continue
            live = sum(not s.done for s in rows[g])
            rows[g] = self._advance(g, rows[g], awaiting[g], C - live if self.refill else 0)
        if self.transport.world > 1:
            self.transport.send(Message(STOP))
