"""Snakemake script of rule indicator: ω(layer, bits) of a model, optionally calibrated."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.indicator import calibrate_indicator, compute_indicator, save_indicator  # noqa: E402

sm = snakemake  # noqa: F821


def indicator():
    omega = compute_indicator(sm.params.model, sm.params.method)
    if sm.params.calibrate_plans:
        omega = calibrate_indicator(omega, sm.params.model, sm.params.calibrate_plans, 0)
    save_indicator(omega, sm.output.omega)


run_logged(sm.log[0], indicator, threads=sm.threads)
