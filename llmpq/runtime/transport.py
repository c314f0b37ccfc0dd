"""Messages around the pipeline ring: stage j sends to j + 1, the last stage back to the first.

Usage::

    from llmpq.runtime.transport import Frames, Message, DistTransport, QueueTransport, PeerLost

    frames = Frames.of(schedule, prompt_len=T, hidden_size=H, hidden_dtype=torch.bfloat16)
    t = DistTransport(rank, world, device, frames, timeout_s=30)   # torch.distributed
    t.send(Message(PREFILL, micro_batch=0, payload=hidden))   # isend: returns at once
    msg = t.recv()                # from the previous stage; PeerLost after timeout_s or a crash
    t.close()                     # waits for the sends in flight

    rings = QueueTransport.ring(world)       # in one process: one transport per stage (threads)

A message travels as one **frame**: a 64-byte header (int64 ``[kind, micro_batch, ndim, d0,
d1, d2, meta_len, 0]``), ``meta_len`` int64 words of control data (the dataset schedule's row
bookkeeping, :mod:`llmpq.runtime.continuous`; none in the one-batch schedule) and the payload's
bytes (hidden states ``[b, q, H]`` between stages, token ids
``[b]`` from the last stage to the first; none for STOP), padded to the size every frame of its
phase has (:class:`Frames`: the largest micro-batch of the phase). Fixed sizes let each stage
**post its receive ahead** (on CPU; :class:`DistTransport` says why not on CUDA): a stage
other than the first posts the receive of its next frame as soon as a frame arrives, before
computing on it, and the first stage posts the receive of a reply when it sends the
micro-batch. Why: gloo's point-to-point transfer is a rendezvous (the
sender's data goes out once the receiver's "ready" notice has reached the sender's transport
thread), and while the sender computes on its one core that thread can wait milliseconds for
the CPU. Measured on this project's 2-core machine: a receive posted 5 ms late behind a sender
that computes waited 0.1-6 ms (median about 2 ms), against 0.05-0.3 ms behind a sleeping one;
with a header and a payload sent apart, each hop paid that twice, and a two-stage decode ran
1.2-1.3x the simulator's time at unchanged compute. Posted ahead, the notice is handled while
the sender computes, and its send leaves from its own thread at once.

Sends are non-blocking (``isend``), so a stage starts its next micro-batch while the last one
is on the wire; a stage's sends complete in order, and frames of one pair arrive in the order
sent, matching the receives in the order posted. A receive that waits longer than
``timeout_s``, or whose peer died, raises :class:`PeerLost` naming the peer stage (gloo closes
the pair then, so the run cannot go on).
"""

from __future__ import annotations

import math
import queue
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

import torch

PREFILL, DECODE, STOP = 0, 1, 2
KIND_NAMES = {PREFILL: "prefill", DECODE: "decode", STOP: "stop"}
HEADER_LEN = 8  # kind, micro-batch, ndim, up to three dims, two spare: 64 bytes keep alignment
HEADER_BYTES = HEADER_LEN * 8
TOKEN_DTYPE = torch.long


@dataclass(frozen=True, eq=False)
class Message:
    kind: int
    micro_batch: int = 0
    payload: torch.Tensor | None = None  # hidden [b, q, H] or token ids [b]; None for STOP
    meta: tuple[int, ...] = ()  # control words that travel with the payload


class PeerLost(RuntimeError):
    """The previous stage sent nothing for ``timeout_s`` or its connection broke."""

    def __init__(self, peer: int, detail: str) -> None:
        self.peer = peer
        super().__init__(f"lost stage {peer}: {detail}")


@dataclass(frozen=True)
class Frames:
    """The byte size of every frame on the ring, by phase and by what it carries."""

    prefill_count: int  # prefill micro-batches: the frames a stage receives before decode
    prefill_rows: int  # the largest prefill micro-batch
    decode_rows: int  # the largest decode micro-batch
    prompt_len: int
    hidden_size: int
    hidden_dtype: torch.dtype
    meta_words: int = 0  # room for control words in every frame
    uniform: bool = False  # every frame the size of the largest (kinds arrive in any order)

    @classmethod
    def of(cls, schedule, prompt_len: int, hidden_size: int, hidden_dtype: torch.dtype) -> Frames:
        """The frames of a :class:`llmpq.runtime.schedule.Schedule` of ``prompt_len`` prompts."""
        rows = [[e - s for s, e in slices] or [1]
                for slices in (schedule.prefill_slices, schedule.decode_slices)]  # fmt: skip
        return cls(len(schedule.prefill_slices), max(rows[0]), max(rows[1]), prompt_len,
                   hidden_size, hidden_dtype)  # fmt: skip

    def nbytes(self, kind: int, tokens: bool) -> int:
        """Bytes of a frame of ``kind`` (STOP travels as a decode frame) carrying token ids
        (to the first stage) or hidden states (to the others)."""
        if self.uniform:
            return max(self._nbytes(k, t) for k in (PREFILL, DECODE) for t in (False, True))
        return self._nbytes(kind, tokens)

    def _nbytes(self, kind: int, tokens: bool) -> int:
        prefill = kind == PREFILL
        rows = self.prefill_rows if prefill else self.decode_rows
        head = HEADER_BYTES + self.meta_words * 8
        if tokens:
            return head + rows * TOKEN_DTYPE.itemsize
        q = self.prompt_len if prefill else 1
        return head + rows * q * self.hidden_size * self.hidden_dtype.itemsize


def header_of(msg: Message) -> list[int]:
    """The ``HEADER_LEN`` int64 words that announce ``msg``: kind, micro-batch, ndim, dims
    (up to three), then the count of control words that follow the header."""
    shape = list(msg.payload.shape) if msg.payload is not None else []
    header = [msg.kind, msg.micro_batch, len(shape), *shape]
    header += [0] * (6 - len(header))
    return header + [len(msg.meta), 0]


def encode(msg: Message, nbytes: int, device: torch.device) -> torch.Tensor:
    """The frame of ``msg``: uint8 [nbytes], header, control words, the payload's bytes (then
    padding)."""
    words = header_of(msg) + list(msg.meta)
    head = len(words) * 8
    frame = torch.empty(nbytes, dtype=torch.uint8, device=device)
    if head > nbytes:
        raise ValueError(f"{len(msg.meta)} control words overflow a {nbytes}-byte frame")
    frame[:head].view(torch.long).copy_(torch.tensor(words, dtype=torch.long))
    if msg.payload is not None:
        data = msg.payload.contiguous().view(-1).view(torch.uint8)
        if head + data.numel() > nbytes:
            raise ValueError(f"a {KIND_NAMES[msg.kind]} payload of {list(msg.payload.shape)} "
                             f"overflows its {nbytes}-byte frame")  # fmt: skip
        frame[head : head + data.numel()].copy_(data)
    return frame


@dataclass(frozen=True)
class Header:
    """What a frame's header announces: the message and the payload's shape, dtype and bytes."""

    kind: int
    micro_batch: int
    shape: tuple[int, ...]  # () for STOP
    dtype: torch.dtype  # 3 dims are hidden states, 1 dim token ids
    meta_len: int = 0  # control words after the header

    @classmethod
    def read(cls, words: list[int], hidden_dtype: torch.dtype) -> Header:
        """The header of ``words`` (the ``HEADER_LEN`` int64s of :func:`header_of`)."""
        kind, micro_batch, ndim, *dims = words
        dtype = hidden_dtype if ndim == 3 else TOKEN_DTYPE
        return cls(kind, micro_batch, tuple(dims[:ndim]), dtype, dims[3])

    @property
    def payload_bytes(self) -> int:
        return 0 if self.kind == STOP else math.prod(self.shape) * self.dtype.itemsize

    def message(self, data: torch.Tensor, meta: tuple[int, ...] = ()) -> Message:
        """The message, its payload read from ``data`` (uint8, at least ``payload_bytes``)."""
        if self.kind == STOP:
            return Message(STOP, self.micro_batch, meta=meta)
        payload = data[: self.payload_bytes].view(self.dtype).view(self.shape)
        return Message(self.kind, self.micro_batch, payload, meta)


def decode(frame: torch.Tensor, hidden_dtype: torch.dtype) -> Message:
    """The message in ``frame`` (the payload a view of it)."""
    header = Header.read(frame[:HEADER_BYTES].view(torch.long).tolist(), hidden_dtype)
    head = HEADER_BYTES + header.meta_len * 8
    meta = tuple(frame[HEADER_BYTES:head].view(torch.long).tolist()) if header.meta_len else ()
    return header.message(frame[head:], meta)


class DistTransport:
    """The ring over ``torch.distributed`` point-to-point (gloo on CPU, NCCL on CUDA), one frame
    per message; receives posted ahead on CPU (see the module notes).

    ``post_ahead`` (default: on CPU only) posts each receive before it is needed. Not on CUDA:
    NCCL runs a receive and a send between the same two ranks on one stream, in order, so in a
    two-stage ring a receive posted ahead would hold back the very send it waits for. There a
    receive is posted when ``recv`` is called, as the frames' fixed sizes still allow.
    """

    def __init__(
        self, rank: int, world: int, device: torch.device, frames: Frames, timeout_s: float,
        post_ahead: bool | None = None,
    ) -> None:  # fmt: skip
        self.rank, self.world, self.device, self.frames = rank, world, device, frames
        self.next, self.prev = (rank + 1) % world, (rank - 1) % world
        self.timeout = timedelta(seconds=timeout_s)
        self.post_ahead = device.type == "cpu" if post_ahead is None else post_ahead
        self._in_flight: list[tuple[object, torch.Tensor]] = []  # sends and their frames
        self._posted: deque[tuple[object, torch.Tensor]] = deque()  # receives, in order
        self._replies: deque[int] = deque()  # stage 0: kinds of the replies still to post
        self._prefills_received = 0
        if rank != 0 and self.post_ahead:
            self._post(self._next_kind())

    def _next_kind(self) -> int:
        """The kind of frame a stage other than the first receives next."""
        return PREFILL if self._prefills_received < self.frames.prefill_count else DECODE

    def _post(self, kind: int) -> None:
        """Post the receive of the next frame from the previous stage (a ``kind`` frame)."""
        import torch.distributed as dist

        size = self.frames.nbytes(kind, tokens=self.rank == 0)
        frame = torch.empty(size, dtype=torch.uint8, device=self.device)
        try:
            work = dist.irecv(frame, self.prev)
        except RuntimeError as err:
            raise PeerLost(self.prev, str(err).splitlines()[0]) from None
        self._posted.append((work, frame))

    def send(self, msg: Message) -> None:
        import torch.distributed as dist

        if self.rank == 0 and msg.kind != STOP:
            self._replies.append(msg.kind)  # its reply: this micro-batch's tokens, in send order
            if self.post_ahead:
                self._post(self._replies.popleft())
        size = self.frames.nbytes(DECODE if msg.kind == STOP else msg.kind, self.next == 0)
        frame = encode(msg, size, self.device)
        work = dist.isend(frame, self.next)
        self._in_flight = [(w, f) for w, f in self._in_flight if not w.is_completed()]
        self._in_flight.append((work, frame))

    def _wait(self, work) -> None:
        try:
            work.wait(timeout=self.timeout)
        except RuntimeError as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise PeerLost(self.prev, detail) from None

    def recv(self) -> Message:
        if not self._posted:  # not posted ahead: post it now
            if self.rank == 0 and not self._replies:
                raise RuntimeError("stage 0 receives with no micro-batch out")
            self._post(self._replies.popleft() if self.rank == 0 else self._next_kind())
        work, frame = self._posted.popleft()
        self._wait(work)
        msg = decode(frame, self.frames.hidden_dtype)
        if self.rank != 0 and msg.kind != STOP:
            self._prefills_received += msg.kind == PREFILL
            if self.post_ahead:  # another frame follows: post its receive now
                self._post(self._next_kind())
        return msg

    def close(self) -> None:
        for work, _ in self._in_flight:
            work.wait(timeout=self.timeout)
        self._in_flight = []


class QueueTransport:
    """The ring inside one process (one stage per thread, or a single stage sending to itself)."""

    def __init__(self, inboxes: list[queue.Queue], rank: int, timeout_s: float) -> None:
        self.inboxes, self.rank, self.timeout_s = inboxes, rank, timeout_s
        self.world = len(inboxes)
        self.next, self.prev = (rank + 1) % self.world, (rank - 1) % self.world

    @classmethod
    def ring(cls, world: int, timeout_s: float = 30.0) -> list[QueueTransport]:
        inboxes: list[queue.Queue] = [queue.Queue() for _ in range(world)]
        return [cls(inboxes, r, timeout_s) for r in range(world)]

    def send(self, msg: Message) -> None:
        self.inboxes[self.next].put(msg)

    def recv(self) -> Message:
        try:
            return self.inboxes[self.rank].get(timeout=self.timeout_s)
        except queue.Empty:
            raise PeerLost(self.prev, f"nothing received for {self.timeout_s:g} s") from None

    def close(self) -> None:
        pass
