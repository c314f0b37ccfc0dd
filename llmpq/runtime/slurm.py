"""A plan served across several hosts from SLURM: one heterogeneous ``srun``, one component
per host of the plan, each running the per-node ``llmpq serve`` on its own node.

Usage::

    from llmpq.runtime.slurm import node_requests, srun_command

    requests = node_requests(plan, cluster, gpu_model=lambda t: "tesla_t4", cpus=8, memory_MB=64000)
    argv = srun_command(requests, serve_argv, port=29500, job_name="llmpq-serve")
    subprocess.run(argv)   # blocks until every node's launcher is done

Why a heterogeneous job: a pipeline's hosts differ (three T4s on one node, a V100 on the
next), and only a component per host can ask each node for its own GPU types and counts
(``--gpus=t4:3`` : ``--gpus=v100:1``); one homogeneous allocation can ask for neither. Component
``r`` is node rank ``r`` of :func:`llmpq.runtime.nodes.node_layout` (the hosts in pipeline
order), so each launcher gets its ``--node-rank`` on its own command line; the rendezvous is the
first component's node, read when the step starts (``SLURM_JOB_NODELIST_HET_GROUP_0`` expanded by
``scontrol show hostnames``), since no host is known before SLURM places the job. The job's
``--out`` must be on a file system every node sees (the job folder lives there).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmpq.cluster import Cluster, load_cluster
from llmpq.errors import ServeFailed
from llmpq.plan import Plan, load_plan
from llmpq.runtime.nodes import node_layout

# Each component's command: the per-node serve with the rendezvous on the job's first node.
RENDEZVOUS = (
    'head=$(scontrol show hostnames "${{SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}}" '
    '| head -n 1) && exec "$@" --rdzv-endpoint "$head:{port}"'
)


@dataclass(frozen=True)
class NodeRequest:
    """What one host of the plan asks SLURM for: one node, one task (its launcher)."""

    host: str  # the cluster file's host
    gpus: tuple[tuple[str, int], ...]  # (the site's GPU model, count), in the host's device order
    cpus: int
    memory_MB: int

    def srun_options(self) -> list[str]:
        options = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cpus}",
                   f"--mem={self.memory_MB}"]  # fmt: skip
        if self.gpus:
            options.append("--gpus=" + ",".join(f"{model}:{n}" for model, n in self.gpus))
        return options


def run_id_of(out_dir: str | Path) -> str:
    """A rendezvous id (and job-folder name) for the run writing ``out_dir``."""
    return "llmpq-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", str(out_dir)).strip("-")[-80:]


def rendezvous_port(run_id: str) -> int:
    """A port for ``run_id``'s rendezvous (29500-30499, by its name: runs in parallel on the
    same first node get different ones)."""
    return 29500 + zlib.crc32(run_id.encode()) % 1000


def site_gpu_model(device_type: str, names: Mapping[str, str]) -> str:
    """The site's ``--gpus`` model name of a catalog type: ``names`` (config
    ``slurm_gpu_models``), else the type lower-cased with '-' as '_' (V100-32G -> v100_32g)."""
    return names.get(device_type, device_type.lower().replace("-", "_"))


def plan_hosts(plan: Plan, cluster: Cluster) -> tuple[str, ...]:
    """The hosts the plan's stages use, in pipeline order."""
    return tuple(dict.fromkeys(cluster.device(s.device).host for s in plan.stages))


def node_requests(
    plan: Plan,
    cluster: Cluster,
    gpu_model: Callable[[str], str],
    cpus: int,
    memory_MB: int,
) -> tuple[NodeRequest, ...]:
    """One request per host of the plan, in node-rank order: the GPUs its stages use, typed
    by ``gpu_model`` (catalog type -> the site's name); CPUs: the cores its CPU workers are given
    in the cluster file where all of them say, else ``cpus``; memory: ``memory_MB``."""
    layout = node_layout(plan, cluster, len(plan_hosts(plan, cluster)))
    out = []
    for host, stages in zip(layout.hosts, layout.stages, strict=True):
        devices = [cluster.device(plan.stages[i].device) for i in stages]
        gpus = Counter(gpu_model(d.type.name) for d in devices if d.type.name != "cpu")
        cpu_workers = [d for d in devices if d.type.name == "cpu"]
        given = [d.cores for d in cpu_workers]
        node_cpus = sum(given) if cpu_workers and None not in given and not gpus else cpus
        out.append(NodeRequest(host, tuple(gpus.items()), max(1, node_cpus), memory_MB))
    return tuple(out)


def llmpq_command() -> list[str]:
    """The ``llmpq`` of this environment (beside its Python: the nodes share the file system)."""
    beside = Path(sys.executable).with_name("llmpq")
    return [str(beside)] if beside.is_file() else [shutil.which("llmpq") or "llmpq"]


def srun_command(
    requests: Sequence[NodeRequest],
    serve_argv: Sequence[str],
    port: int,
    job_name: str,
    common: Sequence[str] = (),
) -> list[str]:
    """The heterogeneous ``srun``: per component its node's request, ``common`` (partition,
    account, time: given to every component) and ``serve_argv`` (``llmpq serve ...`` without the
    node flags) with ``--nnodes``, its ``--node-rank`` and the rendezvous."""
    argv = ["srun", f"--job-name={job_name}", "--kill-on-bad-exit=1"]
    launch = RENDEZVOUS.format(port=port)
    for rank, request in enumerate(requests):
        if rank:
            argv.append(":")
        argv += [*request.srun_options(), *common, "sh", "-c", launch, "sh", *serve_argv,
                 "--nnodes", str(len(requests)), "--node-rank", str(rank)]  # fmt: skip
    return argv


def describe(argv: Sequence[str]) -> str:
    """``argv`` as one shell line, one component per line."""
    return shlex.join(argv).replace(" : ", " \\\n  : ")


def serve_over_srun(
    plan_path: str | Path,
    cluster_path: str | Path,
    serve_argv: Sequence[str],
    *,
    gpu_models: Mapping[str, str],
    cpus: int,
    memory_MB: int,
    port: int,
    job_name: str,
    common: Sequence[str] = (),
) -> None:
    """Run the plan's nodes as one heterogeneous ``srun`` and wait for all of them; the command
    is printed first (the log shows what was asked of SLURM). ServeFailed when srun fails: each
    node's own line (naming stage and host) is in srun's output above it."""
    plan, cluster = load_plan(plan_path), load_cluster(cluster_path)
    requests = node_requests(plan, cluster, lambda t: site_gpu_model(t, gpu_models), cpus,
                             memory_MB)  # fmt: skip
    argv = srun_command(requests, serve_argv, port, job_name, common)
    print(describe(argv), flush=True)
    code = subprocess.run(argv, check=False).returncode
    if code:
        raise ServeFailed(f"srun exited with code {code} (one launcher per host: "
                          f"{', '.join(r.host for r in requests)}); each node's line is above")  # fmt: skip
