"""The ring over plain TCP sockets, for CPU stages that share one host.

Usage (every rank, after ``torch.distributed`` is up: it only swaps addresses)::

    t = SocketTransport.connect(rank, world, hidden_dtype=torch.bfloat16, timeout_s=30)
    t.send(Message(DECODE, 0, hidden)); msg = t.recv(); t.close()

Why not gloo here: gloo's point-to-point transfer is a rendezvous carried out by a transport
thread in each process, and a stage computing on its one core keeps that thread waiting for
the CPU (:mod:`llmpq.runtime.transport` has the measurements). Posting receives ahead removes
most of that; a socket removes all of it: the sender's own thread writes the frame into the
kernel (loopback moves it straight into the receiver's buffer, 4 MiB asked for each way), and
the receiver's own thread reads it when it needs it, with no other thread on either side. A
frame is the 64-byte header of :mod:`llmpq.runtime.transport` and the payload's bytes, no
padding. A send larger than the socket buffers waits for the receiver to read; decode frames
are kilobytes.

A peer that dies closes its socket (the next receive raises :class:`PeerLost` at once); one
that hangs sends nothing and the receive raises it after ``timeout_s``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch

from llmpq.runtime.transport import HEADER_LEN, Header, Message, PeerLost, header_of

BUFFER_BYTES = 4 * 1024 * 1024
LOOPBACK = "127.0.0.1"


def _tuned(sock: socket.socket) -> socket.socket:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    return sock


def _all_gather(value) -> list:
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class SocketTransport:
    """The ring of one host's stages: a TCP connection from each stage to the next."""

    def __init__(
        self, rank: int, world: int, out_sock: socket.socket, in_sock: socket.socket,
        hidden_dtype: torch.dtype, timeout_s: float,
    ) -> None:  # fmt: skip
        self.rank, self.world = rank, world
        self.next, self.prev = (rank + 1) % world, (rank - 1) % world
        self.out_sock, self.in_sock = out_sock, in_sock
        self.hidden_dtype, self.timeout_s = hidden_dtype, timeout_s
        in_sock.settimeout(timeout_s)
        out_sock.settimeout(timeout_s)

    @classmethod
    def connect(
        cls, rank: int, world: int, hidden_dtype: torch.dtype, timeout_s: float,
        all_gather: Callable[[object], list] = _all_gather,
    ) -> SocketTransport:  # fmt: skip
        """Listen, swap ports with ``all_gather``, connect to the next stage, accept the previous."""
        server = socket.create_server((LOOPBACK, 0))
        server.settimeout(timeout_s)
        ports = all_gather(server.getsockname()[1])
        try:
            out_sock = _tuned(socket.create_connection((LOOPBACK, ports[(rank + 1) % world]),
                                                       timeout=timeout_s))  # fmt: skip
            in_sock, _ = server.accept()
        except OSError as err:
            raise PeerLost((rank - 1) % world, f"could not connect the ring: {err}") from None
        finally:
            server.close()
        return cls(rank, world, out_sock, _tuned(in_sock), hidden_dtype, timeout_s)

    def send(self, msg: Message) -> None:
        header = torch.tensor(header_of(msg) + list(msg.meta), dtype=torch.long)
        try:
            self.out_sock.sendall(header.numpy().tobytes())
            if msg.payload is not None:
                data = msg.payload.detach().cpu().contiguous().view(-1).view(torch.uint8)
                self.out_sock.sendall(memoryview(data.numpy()))
        except OSError as err:  # the next stage is gone: its own receive names the failure
            raise PeerLost(self.next, f"send failed: {err}") from None

    def _read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = self.in_sock.recv_into(view[got:])
            except TimeoutError:
                raise PeerLost(self.prev, f"nothing received for {self.timeout_s:g} s") from None
            except OSError as err:
                raise PeerLost(self.prev, f"connection broke: {err}") from None
            if n == 0:
                raise PeerLost(self.prev, "connection closed (the stage exited)")
            got += n

    def recv(self) -> Message:
        words = torch.empty(HEADER_LEN, dtype=torch.long)
        self._read_into(memoryview(words.numpy()).cast("B"))
        header = Header.read(words.tolist(), self.hidden_dtype)
        meta = ()
        if header.meta_len:
            words = torch.empty(header.meta_len, dtype=torch.long)
            self._read_into(memoryview(words.numpy()).cast("B"))
            meta = tuple(words.tolist())
        data = torch.empty(header.payload_bytes, dtype=torch.uint8)
        self._read_into(memoryview(data.numpy()))
        return header.message(data, meta)

    def close(self) -> None:
        for sock in (self.out_sock, self.in_sock):
            try:
                sock.close()
            except OSError:
                pass
