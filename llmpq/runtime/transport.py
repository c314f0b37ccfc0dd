"""Messages around the pipeline ring: stage j sends to j + 1, the last stage back to the first.

Usage::

    from llmpq.runtime.transport import Message, DistTransport, QueueTransport, PeerLost

    t = DistTransport(rank, world, device, payload_dtype, timeout_s=30)   # torch.distributed
    t.send(Message(PREFILL, micro_batch=0, payload=hidden))   # isend: returns at once
    msg = t.recv()                # from the previous stage; PeerLost after timeout_s or a crash
    t.close()                     # waits for the sends in flight

    rings = QueueTransport.ring(world)       # in one process: one transport per stage (threads)

A message is a header (int64 ``[kind, micro_batch, ndim, d0, d1, d2]``) and, unless it is a
STOP, a payload: hidden states ``[b, q, H]`` between stages, token ids ``[b]`` from the last
stage to the first. The receiver knows the payload's dtype from its place in the ring (the
first stage receives token ids, the others hidden states), so only shapes travel. Sends are
non-blocking (``isend``), so a stage starts its next micro-batch while the last one is on the
wire; a stage's sends complete in order. A receive that waits longer than ``timeout_s``, or
whose peer died, raises :class:`PeerLost` naming the peer stage (gloo closes the pair then,
so the run cannot go on).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from datetime import timedelta

import torch

PREFILL, DECODE, STOP = 0, 1, 2
KIND_NAMES = {PREFILL: "prefill", DECODE: "decode", STOP: "stop"}
HEADER_LEN = 6  # kind, micro-batch, ndim, up to three dims


@dataclass(frozen=True, eq=False)
class Message:
    kind: int
    micro_batch: int = 0
    payload: torch.Tensor | None = None  # hidden [b, q, H] or token ids [b]; None for STOP


class PeerLost(RuntimeError):
    """The previous stage sent nothing for ``timeout_s`` or its connection broke."""

    def __init__(self, peer: int, detail: str) -> None:
        self.peer = peer
        super().__init__(f"lost stage {peer}: {detail}")


def _header(msg: Message, device: torch.device) -> torch.Tensor:
    shape = list(msg.payload.shape) if msg.payload is not None else []
    dims = shape + [0] * (HEADER_LEN - 3 - len(shape))
    return torch.tensor([msg.kind, msg.micro_batch, len(shape), *dims], device=device)


class DistTransport:
    """The ring over ``torch.distributed`` point-to-point (gloo on CPU, NCCL on CUDA)."""

    def __init__(
        self, rank: int, world: int, device: torch.device, payload_dtype: torch.dtype,
        timeout_s: float,
    ) -> None:  # fmt: skip
        self.rank, self.world, self.device = rank, world, device
        self.next, self.prev = (rank + 1) % world, (rank - 1) % world
        self.payload_dtype = payload_dtype  # what this rank receives
        self.timeout = timedelta(seconds=timeout_s)
        self._in_flight: list[tuple[list, tuple[torch.Tensor, ...]]] = []  # works, tensors kept

    def send(self, msg: Message) -> None:
        import torch.distributed as dist

        tensors = (_header(msg, self.device),)
        if msg.payload is not None:
            tensors += (msg.payload.contiguous(),)
        works = [dist.isend(t, self.next) for t in tensors]
        self._in_flight = [
            (w, t) for w, t in self._in_flight if not all(x.is_completed() for x in w)
        ]
        self._in_flight.append((works, tensors))

    def _wait(self, work) -> None:
        try:
            work.wait(timeout=self.timeout)
        except RuntimeError as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise PeerLost(self.prev, detail) from None

    def recv(self) -> Message:
        import torch.distributed as dist

        header = torch.empty(HEADER_LEN, dtype=torch.long, device=self.device)
        try:
            work = dist.irecv(header, self.prev)
        except RuntimeError as err:
            raise PeerLost(self.prev, str(err).splitlines()[0]) from None
        self._wait(work)
        kind, micro_batch, ndim, *dims = header.tolist()
        if kind == STOP:
            return Message(STOP, micro_batch)
        dtype = self.payload_dtype if ndim == 3 else torch.long
        payload = torch.empty(dims[:ndim], dtype=dtype, device=self.device)
        self._wait(dist.irecv(payload, self.prev))
        return Message(kind, micro_batch, payload)

    def close(self) -> None:
        for works, _ in self._in_flight:
            for work in works:
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
