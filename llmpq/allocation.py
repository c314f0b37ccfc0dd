"""What this process may use of its machine: the cores and the memory it was granted.

On a shared node the machine's totals are not the job's: SLURM (``srun --cpus-per-task``,
``--mem``), ``taskset`` and container limits hand a process part of it. Thread counts and
memory checks read these instead of ``os.cpu_count()`` and ``MemTotal``.

Usage::

    from llmpq import allocation

    allocation.cores()          # CPUs in this process's affinity mask
    allocation.memory_bytes()   # the least of RAM, the cgroup limit and SLURM's grant
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2 (the process's own group under systemd/SLURM
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, which srun and taskset set)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def memory_bytes(env: Mapping[str, str] | None = None) -> int | None:
    """Memory this process may use: the least of the machine's RAM, its cgroup's limit and the
    SLURM job's ``--mem`` / ``--mem-per-cpu`` grant (None when none of them can be read)."""
    env = os.environ if env is None else env
    limits = [x for x in (_ram_bytes(), _cgroup_bytes(), slurm_memory_bytes(env)) if x]
    return min(limits) if limits else None


def slurm_memory_bytes(env: Mapping[str, str]) -> int | None:
    """SLURM's memory grant on this node (``SLURM_MEM_PER_NODE``, or ``SLURM_MEM_PER_CPU`` ×
    ``SLURM_CPUS_ON_NODE``; both in MB), else None."""
    try:
        if env.get("SLURM_MEM_PER_NODE"):
            return int(env["SLURM_MEM_PER_NODE"]) * 2**20
        if env.get("SLURM_MEM_PER_CPU") and env.get("SLURM_CPUS_ON_NODE"):
            return int(env["SLURM_MEM_PER_CPU"]) * int(env["SLURM_CPUS_ON_NODE"]) * 2**20
    except ValueError:
        return None
    return None


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_bytes() -> int | None:
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            return int(text)
    return None
