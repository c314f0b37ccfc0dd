"""bench/machine.py: what every bench JSON records about the machine, the code and the load."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import BenchRun, machine_record  # noqa: E402


def test_the_record_names_the_machine_the_code_and_the_load():
    run = BenchRun.start()
    record = run.finish()
    assert set(machine_record()) <= set(record)
    assert record["cores_used"] >= 1 and record["python"].count(".") == 2
    assert record["cpu_model"] and all(f.startswith(("avx", "amx", "fma", "f16c", "sse"))
                                       for f in record["cpu_flags"])  # fmt: skip
    assert len(record["git_commit"].removesuffix("-dirty")) == 40
    assert len(record["load_average_start"]) == len(record["load_average_end"]) == 3
    assert record["wall_s"] >= 0
