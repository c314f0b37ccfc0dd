"""Snakemake script of rule profile: a device type's measured cost table for the checkpoint."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.costmodel.tables import save_cost_table  # noqa: E402
from llmpq.profiler import ProfileGrid, profile_model  # noqa: E402

sm = snakemake  # noqa: F821
grid = sm.params.grid


def profile():
    table = profile_model(
        sm.input.model, sm.params.device,
        ProfileGrid(bits=grid["bits"], batch=grid["batch"], seq=grid["seq"], rounds=grid["rounds"]),
        device_type=sm.wildcards.device_type, threads=grid["threads"],
        group_size=sm.params.group_size, progress=False,
    )  # fmt: skip
    save_cost_table(table, sm.output.table)
    print(f"profiled in {table.attrs['profile_seconds']} s -> {sm.output.table}")


run_logged(sm.log[0], profile)
