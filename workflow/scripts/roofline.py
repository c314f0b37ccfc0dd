"""Snakemake script of rule roofline: a catalog GPU's cost table for a model shape."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.costmodel.roofline import DEFAULT_EFFICIENCY, calibrate_efficiency, roofline_table  # noqa: E402
from llmpq.costmodel.tables import load_cost_table, save_cost_table  # noqa: E402
from llmpq.devices import device_type  # noqa: E402
from llmpq.models.spec import model_spec  # noqa: E402

sm = snakemake  # noqa: F821


def roofline():
    efficiency = DEFAULT_EFFICIENCY
    if sm.input.calibrate:
        measured = load_cost_table(sm.input.calibrate[0])
        efficiency = calibrate_efficiency(measured, device_type(measured.attrs["device_type"]))
    table = roofline_table(
        model_spec(sm.wildcards.shape), device_type(sm.wildcards.device_type), efficiency
    )
    save_cost_table(table, sm.output.table)


run_logged(sm.log[0], roofline)
