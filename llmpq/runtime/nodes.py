"""Several machines: which stages each node runs, how its launcher joins the others, and the
check each stage makes of the device it landed on.

Usage::

    from llmpq.runtime.nodes import Nodes, node_layout

    nodes = Nodes(count=2, rank=1, endpoint="10.0.0.1:29500")     # what --nnodes ... say
    layout = node_layout(plan, cluster, nodes.count)   # node r runs layout.stages[r]
    layout.hosts[1], layout.stages[1]                  # ("node-v100", (2, 3))

The nodes are the cluster file's hosts in pipeline order of their first stage: node 0 holds
stage 0 (it writes the outputs), node 1 the host of the next stage not on node 0, and so on; a
node may run any number of stages (uneven counts are fine). Every node's launcher starts one
torchrun agent with ``--nproc-per-node`` = its own stage count over the c10d rendezvous at
``endpoint``. torchrun assigns its global ranks by rendezvous order, not by ``--node-rank``
(which only the static backend honours), so a worker does not take its stage from ``RANK``: the
launcher passes the node's stages in ``LLMPQ_NODE_STAGES`` and worker ``LOCAL_RANK`` runs the
``LOCAL_RANK``-th of them; the stages then form their own process group, rank = stage, over
the rendezvous store (:func:`stage_process_group`).

The job folder ``OUT/.serve-<run id>`` must be on a file system every node sees (NFS, Lustre;
on one machine, any folder): node 0 writes the job there, every stage writes its status and
report there, and each launcher watches it to end a failed run on its own node. Each launcher
also leaves ``OUT/.serve-<run id>.nodes/node-<r>.json`` as it starts, so that node 0 can name a
node that never joined.

Addresses: the agent that becomes rendezvous rank 0 publishes its own address as the workers'
``MASTER_ADDR``, by default its hostname (``socket.getfqdn()``), and gloo binds to the address
the hostname resolves to. Where the hostname resolves to a loopback address (``/etc/hosts``'
``127.0.1.1`` on Debian, containers, network namespaces) the other nodes' workers then dial
their own loopback and wait until the timeout. So each node passes torchrun ``--local-addr``:
``--node-addr`` if given, else the address of the interface it reaches the rendezvous
endpoint through (:func:`route_address`; a routing lookup, no packet sent), and its workers get
``GLOO_SOCKET_IFNAME`` = that address's interface unless the user set it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from llmpq import allocation
from llmpq.cluster import Cluster
from llmpq.errors import UserError
from llmpq.files import write_json_atomic
from llmpq.plan import Plan

if TYPE_CHECKING:
    import torch

STAGES_ENV = "LLMPQ_NODE_STAGES"  # this node's stages, comma-separated, in local-rank order


@dataclass(frozen=True)
class Nodes:
    """This launcher's place in a run over ``count`` nodes (the ``llmpq serve`` node flags)."""

    count: int
    rank: int
    endpoint: str  # host:port of the rendezvous (node 0's address, a free port)
    run_id: str = "llmpq"
    join_timeout_s: float = 60.0  # how long the nodes wait for each other
    address: str | None = None  # this node's address the others reach; None: route_address

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or self.count < 1:
            raise UserError("--nnodes", self.count, "give the number of nodes, at least 1")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.count:
            raise UserError("--node-rank", self.rank, f"use 0 … {self.count - 1} (one per node)")
        host, _, port = self.endpoint.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError("--rdzv-endpoint", self.endpoint,
                            "give HOST:PORT, node 0's address and a free port (e.g. node-a:29500)")  # fmt: skip
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.run_id):
            raise UserError("--rdzv-id", self.run_id, "use letters, digits, '.', '_' or '-'")
        if not self.join_timeout_s > 0:
            raise UserError("--join-timeout-s", self.join_timeout_s, "use a positive number")

    @property
    def endpoint_host(self) -> str:
        return self.endpoint.rpartition(":")[0].strip("[]")

    def local_address(self) -> str:
        """The address this node's agent and workers are reached at (module docstring)."""
        if self.address:
            return self.address
        try:
            return route_address(self.endpoint_host)
        except OSError as err:
            raise UserError("--rdzv-endpoint", self.endpoint, "give a host this node can reach, "
                            "or this node's address with --node-addr",
                            problem=f"has no route from {os.uname().nodename} ({err})") from err  # fmt: skip

    def job_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f".serve-{self.run_id}"

    def markers(self, out_dir: Path) -> Path:
        return Path(out_dir) / f".serve-{self.run_id}.nodes"


@dataclass(frozen=True)
class NodeLayout:
    hosts: tuple[str, ...]  # node rank -> the cluster file's host
    stages: tuple[tuple[int, ...], ...]  # node rank -> its stages, ascending

    def host_of(self, stage: int) -> str:
        return next(h for h, ss in zip(self.hosts, self.stages, strict=True) if stage in ss)

    def describe(self) -> str:
        return "; ".join(f"node {r} = {h}: stages {', '.join(map(str, ss))}"
                         for r, (h, ss) in enumerate(zip(self.hosts, self.stages, strict=True)))  # fmt: skip


def node_layout(plan: Plan, cluster: Cluster | None, count: int = 1) -> NodeLayout:
    """The plan's stages grouped by their devices' hosts (module docstring); UserError when
    ``count`` is not the number of hosts the plan uses."""
    if cluster is None:
        if count > 1:
            raise UserError("--cluster", None,
                            "give the cluster file: its hosts place the stages on the nodes")  # fmt: skip
        return NodeLayout(("localhost",), (tuple(range(len(plan.stages))),))
    plan.check_against(cluster)
    hosts: list[str] = []
    stages: dict[str, list[int]] = {}
    for i, s in enumerate(plan.stages):
        host = cluster.device(s.device).host
        if host not in stages:
            hosts.append(host)
            stages[host] = []
        stages[host].append(i)
    layout = NodeLayout(tuple(hosts), tuple(tuple(stages[h]) for h in hosts))
    if count != len(hosts) and (count > 1 or len(hosts) > 1):
        raise UserError(
            "--nnodes", count, f"start one node per host of the plan ({layout.describe()}): "
            f"--nnodes {len(hosts)}", problem=f"does not match the plan's {len(hosts)} host(s)",
        )  # fmt: skip
    return layout


def route_address(host: str) -> str:
    """The local address of the interface the kernel routes ``host`` through (a UDP socket's
    ``connect`` sends nothing); OSError when there is no route or the name does not resolve."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]


def interface_of(address: str) -> str | None:
    """The name of the local IPv4 interface holding ``address`` (None if none does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
            except OSError:  # SIOCGIFADDR: the interface has no IPv4 address
                continue
            if socket.inet_ntoa(raw[20:24]) == address:
                return name
    return None


def node_env(nodes: Nodes) -> dict[str, str]:
    """This node's workers' environment: gloo on the interface of the node's address."""
    name = None if os.environ.get("GLOO_SOCKET_IFNAME") else interface_of(nodes.local_address())
    return {"GLOO_SOCKET_IFNAME": name} if name else {}


def torchrun_args(nodes: Nodes, layout: NodeLayout) -> list[str]:
    """This node's torchrun options: its own process count, the c10d rendezvous at the
    endpoint, its own address (module docstring), no restarts."""
    return ["--nnodes", str(nodes.count), "--nproc-per-node", str(len(layout.stages[nodes.rank])),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", nodes.endpoint, "--rdzv-id",
            nodes.run_id, "--local-addr", nodes.local_address(), "--rdzv-conf",
            # node 0 hosts the rendezvous store: torchrun's own guess compares the endpoint with
            # the hostname's addresses and misses an address of another interface (a second NIC)
            f"join_timeout={max(1, round(nodes.join_timeout_s))},is_host={int(nodes.rank == 0)}",
            "--max-restarts", "0"]  # fmt: skip


def stages_env(layout: NodeLayout, rank: int) -> dict[str, str]:
    return {STAGES_ENV: ",".join(map(str, layout.stages[rank]))}


def mark_started(nodes: Nodes, out_dir: Path) -> None:
    """This node's launcher has started (node 0 names the nodes that never did)."""
    folder = nodes.markers(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"node-{nodes.rank}.json",
                      {"host": os.uname().nodename, "pid": os.getpid(), "started": time.time()})  # fmt: skip


def missing_nodes(nodes: Nodes, out_dir: Path, since: float) -> list[int]:
    """Nodes whose launcher left no mark since ``since`` (a Unix time) less the join timeout."""
    out = []
    for r in range(nodes.count):
        path = nodes.markers(out_dir) / f"node-{r}.json"
        try:
            started = json.loads(path.read_text())["started"]
        except (OSError, ValueError, KeyError):
            started = None
        if started is None or started < since - nodes.join_timeout_s:
            out.append(r)
    return out


# ---------------------------------------------------------------------------- in the worker
def worker_stage(local_rank: int, global_rank: int) -> int:
    """The stage this worker runs: its node's ``LOCAL_RANK``-th (torchrun's RANK otherwise)."""
    given = os.environ.get(STAGES_ENV)
    if not given:
        return global_rank
    return int(given.split(",")[local_rank])


def stage_process_group(backend: str, stage: int, world: int, timeout_s: float) -> None:
    """The default process group with rank = stage, over the store torchrun's agents share
    (``MASTER_ADDR:MASTER_PORT``); outside torchrun's multi-node mode, the usual env:// one."""
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_s)
    if not os.environ.get(STAGES_ENV):
        dist.init_process_group(backend, timeout=timeout)
        return
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timeout)  # fmt: skip
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"llmpq/stages/{attempt}", store),
                            rank=stage, world_size=world, timeout=timeout)  # fmt: skip


GPU_FAMILY = re.compile(r"^([A-Z]+[0-9]+)")


def check_device(plan: Plan, stage: int, device: torch.device, threads: int | None,
                 budget_bytes: int | None, host: str) -> None:  # fmt: skip
    """UserError, naming the stage and the host, when this process's device is not the plan's
    ``device_type`` for the stage (on CPU: fewer cores than its threads, or less memory than
    its budget)."""
    s = plan.stages[stage]
    where = f"stage {stage} ({s.device} on {host}, layers [{s.layers[0]}, {s.layers[1]}))"
    me = os.uname().nodename
    if s.device_type == "cpu":
        cores = allocation.cores()
        if threads is not None and threads > cores:
            raise UserError(where, f"{threads} threads",
                            f"run it where {threads} cores are free, or lower its cores in the "
                            f"cluster file", problem=f"but {me} gives this process {cores} core(s)")  # fmt: skip
        total = allocation.memory_bytes()
        if budget_bytes is not None and total is not None and budget_bytes > total:
            raise UserError(where, f"a budget of {budget_bytes / 1024**3:.2f} GiB",
                            "lower its memory_GiB in the cluster file",
                            problem=f"but {me} has {total / 1024**3:.2f} GiB")  # fmt: skip
        return
    if device.type != "cuda":
        raise UserError(where, s.device_type, f"start node {host!r} on a machine with a {s.device_type}",
                        problem=f"needs a GPU but {me} has no CUDA device")  # fmt: skip
    import torch

    name = torch.cuda.get_device_name(device)
    family = GPU_FAMILY.match(s.device_type)
    if family is None or not re.search(rf"\b{family.group(1)}\b", name):
        raise UserError(where, s.device_type, f"start node {host!r} on a machine with a "
                        f"{s.device_type}, or fix its type in the cluster file",
                        problem=f"but {me}'s {device} is a {name}")  # fmt: skip
