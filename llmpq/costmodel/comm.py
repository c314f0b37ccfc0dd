"""The communication model: activation transfers between two local ranks, measured and fitted.

Usage::

    from llmpq.costmodel.comm import measure_comm, link_transfer_ms, CommFit

    fit = measure_comm(spec)                       # two gloo ranks on this host (nccl on GPUs)
    fit.latency_ms, fit.bandwidth_GBps, fit.transfer_ms(8 * 64 * 256 * 2)
    save_comm(fit, "results/costs/cpu/comm.json"); fit = load_comm("results/costs/cpu/comm.json")
    link_transfer_ms(cluster, dev_a, dev_b, size_bytes, measured=fit)

Measurement: two processes (``torch.multiprocessing.start_processes``, spawn) join a
``torch.distributed`` group through a ``FileStore``; for each payload rank 0 sends a tensor of
that many bytes and rank 1 sends it back (ping-pong, both ranks aligned by a barrier before
every exchange); half the lower-quartile round trip is the one-way time. The payloads are the sizes a
pipeline sends: prefill hidden states (batch × prompt × hidden × 2 bytes) and decode ones
(batch × hidden × 2). A barrier precedes ``destroy_process_group`` (without it gloo teardown
intermittently aborts). The fit ``ms = latency_ms + bytes / bandwidth`` has non-negative
coefficients and minimises relative error.

Links: a link the cluster YAML lists explicitly overrides the measurement (hosts you do not
have); the measurement stands for links between devices on one host; other links take the
cluster's defaults (:meth:`llmpq.cluster.Cluster.link`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from llmpq.cluster import Cluster, ClusterDevice, Link
from llmpq.errors import UserError
from llmpq.files import write_json_atomic
from llmpq.models.spec import ModelSpec

WORLD_SIZE = 2


@dataclass(frozen=True)
class CommFit:
    """One-way transfer time between two ranks: ``latency_ms + bytes / bandwidth``."""

    latency_ms: float
    bandwidth_GBps: float
    backend: str = "gloo"
    points: int = 0
    fit_mape_pct: float = float("nan")

    def transfer_ms(self, size_bytes) -> float | np.ndarray:
        out = self.latency_ms + np.asarray(size_bytes, dtype=np.float64) / (
            self.bandwidth_GBps * 1e6
        )
        return float(out) if np.ndim(out) == 0 else out

    def as_link(self, hosts: tuple[str, str]) -> Link:
        return Link(hosts, self.bandwidth_GBps, self.latency_ms)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CommFit:
        return cls(**data)


def save_comm(fit: CommFit, path: str | Path) -> Path:
    """Write the fit as JSON (atomic)."""
    return write_json_atomic(path, fit.to_dict())


def load_comm(path: str | Path) -> CommFit:
    """Read a fit written by :func:`save_comm`; UserError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        fit = CommFit.from_dict(data)
        if not (fit.latency_ms >= 0 and fit.bandwidth_GBps > 0):
            raise ValueError("negative latency or bandwidth")
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            "comm file", str(path), "measure it again (llmpq profile --comm-out F.json)",
            problem=f"is not a communication fit ({type(err).__name__})",
        ) from None  # fmt: skip
    return fit


def default_payloads(spec: ModelSpec) -> list[int]:
    """Decode (batch × hidden) and prefill (batch × prompt × hidden) sizes, 16-bit, in bytes."""
    per_token = spec.hidden_bytes_per_token()
    tokens = {b * s for b in (1, 4, 16) for s in (1, 16, 128, 512)}
    return sorted(per_token * n for n in tokens)


def fit_transfers(sizes_bytes: Sequence[int], one_way_ms: Sequence[float], backend: str) -> CommFit:
    """Non-negative latency and inverse bandwidth minimising relative error."""
    size = np.asarray(sizes_bytes, dtype=np.float64)
    y = np.asarray(one_way_ms, dtype=np.float64)
    if size.size < 2 or (y <= 0).any():
        raise UserError("comm samples", size.size, "measure at least two positive transfers")
    x = np.column_stack([np.ones_like(size), size]) / y[:, None]
    scale = np.linalg.norm(x, axis=0)
    (latency, per_byte), _ = nnls(x / scale, np.ones_like(y))
    latency, per_byte = latency / scale[0], per_byte / scale[1]
    if per_byte <= 0:
        # Noise hid the growth with size (a loaded machine): bound the bandwidth from below by
        # counting the whole time of the largest payload as byte time. Never an infinite link.
        big = int(np.argmax(size))
        per_byte = float(y[big] / size[big])
        latency = float(max(0.0, np.min(y - per_byte * size)))
    bandwidth = 1e-6 / per_byte
    mape = float(np.mean(np.abs(latency + per_byte * size - y) / y) * 100)
    return CommFit(float(latency), float(bandwidth), backend, int(size.size), mape)


def _worker(
    rank: int, store_path: str, sizes: list[int], repeats: int, warmup: int, backend: str,
    out_path: str,
) -> None:  # fmt: skip
    """One rank of the ping-pong (runs in a spawned process)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.FileStore(store_path, WORLD_SIZE)
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=120)
    )
    device = torch.device(f"cuda:{rank}" if backend == "nccl" else "cpu")
    peer = 1 - rank
    results = {}
    for size in sizes:
        buf = torch.zeros(size, dtype=torch.uint8, device=device)
        times = []
        for i in range(warmup + repeats):
            dist.barrier()
            start = time.perf_counter()
            if rank == 0:
                dist.send(buf, peer)
                dist.recv(buf, peer)
            else:
                dist.recv(buf, peer)
                dist.send(buf, peer)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
        # lower quartile: robust to the other jobs of a loaded machine, unlike mean or median
        results[str(size)] = float(np.percentile(times, 25)) / 2  # one way
    if rank == 0:
        Path(out_path).write_text(json.dumps(results))
    dist.barrier()  # before destroy: gloo teardown otherwise aborts now and then
    dist.destroy_process_group()


def measure_transfers(
    sizes_bytes: Sequence[int], backend: str = "gloo", repeats: int = 20, warmup: int = 3
) -> dict[int, float]:
    """One-way ms per payload size between two local ranks (lower quartile of ``repeats``)."""
    import torch
    import torch.multiprocessing as mp

    if backend == "nccl" and torch.cuda.device_count() < WORLD_SIZE:
        raise UserError("backend", backend, "use gloo: nccl needs two CUDA GPUs here")
    sizes = sorted({int(s) for s in sizes_bytes})
    with tempfile.TemporaryDirectory(prefix="llmpq-comm-") as tmp:
        store, out = os.path.join(tmp, "store"), os.path.join(tmp, "result.json")
        mp.start_processes(
            _worker, args=(store, sizes, repeats, warmup, backend, out), nprocs=WORLD_SIZE,
            join=True, start_method="spawn",
        )  # fmt: skip
        measured = json.loads(Path(out).read_text())
    return {int(k): float(v) for k, v in measured.items()}


def measure_comm(
    spec: ModelSpec | None = None,
    sizes_bytes: Sequence[int] | None = None,
    backend: str | None = None,
    repeats: int = 20,
) -> CommFit:
    """Measure and fit local rank-to-rank transfers (gloo on CPU, nccl with two GPUs)."""
    import torch

    if backend is None:
        backend = "nccl" if torch.cuda.device_count() >= WORLD_SIZE else "gloo"
    if sizes_bytes is None:
        if spec is None:
            raise UserError("sizes_bytes", None, "give payload sizes or a model spec")
        sizes_bytes = default_payloads(spec)
    measured = measure_transfers(sizes_bytes, backend, repeats)
    return fit_transfers(list(measured), list(measured.values()), backend)


def _listed_link(cluster: Cluster, a: ClusterDevice, b: ClusterDevice) -> Link | None:
    for link in cluster.links:
        if set(link.hosts) == {a.host, b.host}:
            return link
    return None


def link_transfer_ms(
    cluster: Cluster, a: ClusterDevice, b: ClusterDevice, size_bytes, measured: CommFit | None
) -> float | np.ndarray:
    """Time to send ``size_bytes`` from ``a`` to ``b``: a listed link, else the measurement for
    devices on one host, else the cluster's default link."""
    if a.name == b.name:
        return 0.0 * np.asarray(size_bytes, dtype=np.float64)
    listed = _listed_link(cluster, a, b)
    if listed is not None:
        return listed.transfer_ms(size_bytes)
    if measured is not None and a.host == b.host:
        return measured.transfer_ms(size_bytes)
    return cluster.link(a, b).transfer_ms(size_bytes)
