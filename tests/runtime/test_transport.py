"""Frames on the ring: sizes by phase, exact round trips, and receives posted ahead over gloo."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from llmpq.runtime.schedule import Schedule
from llmpq.runtime.transport import (
    DECODE,
    HEADER_BYTES,
    PREFILL,
    STOP,
    DistTransport,
    Frames,
    Message,
    decode,
    encode,
)

H, T = 16, 5
SCHEDULE = Schedule.of(batch_size=7, prefill_size=3, decode_size=4, decode_count=2, gen_len=3)
CPU = torch.device("cpu")


def _frames() -> Frames:
    return Frames.of(SCHEDULE, prompt_len=T, hidden_size=H, hidden_dtype=torch.bfloat16)


def test_frames_take_the_largest_micro_batch_of_each_phase() -> None:
    frames = _frames()
    assert (frames.prefill_count, frames.prefill_rows, frames.decode_rows) == (3, 3, 4)
    assert frames.nbytes(PREFILL, tokens=False) == HEADER_BYTES + 3 * T * H * 2
    assert frames.nbytes(DECODE, tokens=False) == HEADER_BYTES + 4 * H * 2
    assert frames.nbytes(PREFILL, tokens=True) == HEADER_BYTES + 3 * 8
    assert frames.nbytes(DECODE, tokens=True) == HEADER_BYTES + 4 * 8


@pytest.mark.parametrize(
    ("kind", "payload", "tokens"),
    [
        (PREFILL, torch.randn(1, T, H).to(torch.bfloat16), False),  # the short last micro-batch
        (DECODE, torch.randn(4, 1, H).to(torch.bfloat16), False),
        (DECODE, torch.tensor([5, 9, 1]), True),
        (STOP, None, False),
    ],
)
def test_a_frame_carries_its_message_exactly(kind, payload, tokens) -> None:
    frames = _frames()
    size = frames.nbytes(DECODE if kind == STOP else kind, tokens)
    frame = encode(Message(kind, 2, payload), size, CPU)
    assert frame.dtype == torch.uint8 and frame.numel() == size
    msg = decode(frame, torch.bfloat16)
    assert (msg.kind, msg.micro_batch) == (kind, 2)
    if payload is None:
        assert msg.payload is None
    else:
        assert msg.payload.dtype == payload.dtype and torch.equal(msg.payload, payload)
        assert (msg.payload.data_ptr() - frame.data_ptr()) % 64 == 0  # aligned as allocated


def test_a_payload_larger_than_its_frame_is_refused() -> None:
    frames = _frames()
    with pytest.raises(ValueError, match="overflows"):
        encode(Message(DECODE, 0, torch.zeros(5, 1, H, dtype=torch.bfloat16)),
               frames.nbytes(DECODE, tokens=False), CPU)  # fmt: skip


def _ring_rank(rank: int, world: int, store: str, out: str, ahead: bool) -> None:
    """The schedule's traffic: stage 0 sends prefill and decode micro-batches of uneven sizes
    and STOP; each other stage forwards them (adding its rank), the last returns token ids."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))  # fmt: skip
    t = DistTransport(rank, world, CPU, _frames(), timeout_s=30, post_ahead=ahead)
    seen = []
    if rank == 0:
        for mb, (s, e) in enumerate(SCHEDULE.prefill_slices):
            t.send(Message(PREFILL, mb, torch.full((e - s, T, H), float(mb), dtype=torch.bfloat16)))
        for _ in SCHEDULE.prefill_slices:
            msg = t.recv()
            seen.append([msg.kind, msg.micro_batch, msg.payload.tolist()])
        for mb, (s, e) in enumerate(SCHEDULE.decode_slices):
            t.send(Message(DECODE, mb, torch.full((e - s, 1, H), 10.0 + mb, dtype=torch.bfloat16)))
        for _ in SCHEDULE.decode_slices:
            msg = t.recv()
            seen.append([msg.kind, msg.micro_batch, msg.payload.tolist()])
        t.send(Message(STOP))
    else:
        while True:
            msg = t.recv()
            seen.append([msg.kind, msg.micro_batch, len(t._posted)])
            if msg.kind == STOP:
                if rank != world - 1:
                    t.send(msg)
                break
            x = msg.payload + rank  # [b, q, H]
            if rank == world - 1:  # token ids: the value each row carries, as an int
                t.send(Message(msg.kind, msg.micro_batch, x[:, -1, 0].round().long()))
            else:
                t.send(Message(msg.kind, msg.micro_batch, x))
    t.close()
    Path(f"{out}.{rank}").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("ahead", [True, False])  # CPU posts ahead; CUDA (NCCL) posts on recv
def test_three_stages_pass_every_frame_in_order(tmp_path, ahead: bool) -> None:
    world = 3
    mp.start_processes(_ring_rank, nprocs=world, join=True, start_method="spawn",
                       args=(world, str(tmp_path / "store"), str(tmp_path / "out"), ahead))  # fmt: skip
    first = json.loads((tmp_path / "out.0").read_text())
    added = sum(range(1, world))  # each later stage adds its rank
    prefill_rows = [e - s for s, e in SCHEDULE.prefill_slices]
    decode_rows = [e - s for s, e in SCHEDULE.decode_slices]
    assert first == (
        [[PREFILL, mb, [mb + added] * n] for mb, n in enumerate(prefill_rows)]
        + [[DECODE, mb, [10 + mb + added] * n] for mb, n in enumerate(decode_rows)]
    )
    for rank in range(1, world):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        kinds = [PREFILL] * len(prefill_rows) + [DECODE] * len(decode_rows) + [STOP]
        assert [k for k, _, _ in got] == kinds
        # posted ahead: after every frame but STOP, the next receive is already posted
        assert [posted for _, _, posted in got] == [int(ahead)] * (len(kinds) - 1) + [0]


def _socket_ring(world: int, timeout_s: float = 10.0) -> list:
    """``world`` connected SocketTransports in one process (threads swap the ports)."""
    import threading

    from llmpq.runtime.sockets import SocketTransport

    ports: list = [None] * world
    barrier = threading.Barrier(world)
    out: list = [None] * world

    def gather_for(rank: int):
        def all_gather(port):
            ports[rank] = port
            barrier.wait()
            return list(ports)

        return all_gather

    def one(rank: int) -> None:
        out[rank] = SocketTransport.connect(rank, world, torch.bfloat16, timeout_s,
                                            all_gather=gather_for(rank))  # fmt: skip

    threads = [threading.Thread(target=one, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_the_socket_ring_carries_every_kind_of_message_exactly() -> None:
    ring = _socket_ring(3)
    hidden = torch.randn(2, 5, H).to(torch.bfloat16)
    sent = [Message(PREFILL, 1, hidden), Message(DECODE, 0, hidden[:, -1:]),
            Message(DECODE, 1, torch.tensor([7, 3])), Message(STOP)]  # fmt: skip
    for msg in sent:
        ring[0].send(msg)
        got = ring[1].recv()
        assert (got.kind, got.micro_batch) == (msg.kind, msg.micro_batch)
        if msg.payload is None:
            assert got.payload is None
        else:
            assert got.payload.dtype == msg.payload.dtype
            assert torch.equal(got.payload, msg.payload)
    ring[2].send(Message(DECODE, 0, torch.tensor([1, 2])))  # the last stage back to the first
    assert torch.equal(ring[0].recv().payload, torch.tensor([1, 2]))
    for t in ring:
        t.close()


def test_a_closed_or_silent_socket_peer_is_lost_naming_it() -> None:
    from llmpq.runtime.transport import PeerLost

    ring = _socket_ring(2, timeout_s=0.5)
    with pytest.raises(PeerLost, match="nothing received for 0.5 s") as silent:
        ring[1].recv()
    assert silent.value.peer == 0
    ring[0].close()  # stage 0 exits
    with pytest.raises(PeerLost, match="connection closed") as closed:
        ring[1].recv()
    assert closed.value.peer == 0
    ring[1].close()
