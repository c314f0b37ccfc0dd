"""What every bench JSON records about its run: the machine, the code and the load.

Usage (a bench puts the repository root on ``sys.path``, as ``bench/paper_clusters.py`` does)::

    from bench.machine import BenchRun

    run = BenchRun.start()
    ...                                              # the bench
    result = {"clusters": records, "run": run.finish()}

``finish()`` gives :func:`machine_record` (CPU model and SIMD flags, cores this process may use,
torch's version and threads, Python, git commit) with the load average at the start and at the
end and the wall time, so a figure can be told apart from the machine and the moment it came from.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# the CPU features the kernels' speed depends on (bf16 and int8 dot products, vector width)
SIMD_FLAG = re.compile(r"^(avx\w*|amx\w*|fma|f16c|sse4_2)$")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The first CPU's model name and its SIMD flags, from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = sorted(f for f in value.split() if SIMD_FLAG.match(f))
            break
    return model, flags


def git_commit() -> str:
    """HEAD's hash, with ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def machine_record() -> dict[str, Any]:
    model, flags = cpu_model_and_flags()
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    torch = sys.modules.get("torch")  # its threads only if the bench uses it (not imported here)
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "cores_used": len(os.sched_getaffinity(0)),
        "torch": torch_version,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": platform.node(),
    }


@dataclass(frozen=True)
class BenchRun:
    """One bench run: its start (monotonic seconds) and the load average then."""

    started_s: float
    load_average_start: tuple[float, float, float]

    @classmethod
    def start(cls) -> BenchRun:
        return cls(time.monotonic(), os.getloadavg())

    def finish(self) -> dict[str, Any]:
        """The machine record with the load at the start and now, and the wall seconds."""
        return {
            **machine_record(),
            "load_average_start": list(self.load_average_start),
            "load_average_end": list(os.getloadavg()),
            "wall_s": round(time.monotonic() - self.started_s, 3),
        }
