"""What a process may use: its affinity mask's cores and the least of RAM, cgroup and SLURM."""

import os

from llmpq import allocation


def test_cores_are_the_affinity_mask():
    assert allocation.cores() == len(os.sched_getaffinity(0))


def test_slurm_grant_caps_the_memory():
    machine = allocation.memory_bytes({})
    assert machine is not None and machine > 2**20
    assert allocation.memory_bytes({"SLURM_MEM_PER_NODE": "100"}) == 100 * 2**20
    per_cpu = {"SLURM_MEM_PER_CPU": "50", "SLURM_CPUS_ON_NODE": "3"}
    assert allocation.slurm_memory_bytes(per_cpu) == 150 * 2**20
    assert allocation.slurm_memory_bytes({"SLURM_MEM_PER_NODE": "lots"}) is None
    huge = {"SLURM_MEM_PER_NODE": str(10**9)}  # more than the machine: the machine's RAM wins
    assert allocation.memory_bytes(huge) == machine
