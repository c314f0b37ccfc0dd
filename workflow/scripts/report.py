"""Snakemake script of rule report: the summary table and figures in results/report/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.report import write_report  # noqa: E402

sm = snakemake  # noqa: F821

run_logged(
    sm.log[0],
    lambda: write_report(
        sm.input.plans,
        sm.input.sims,
        sm.input.serves,
        sm.input.quality,
        reference=sm.input.get("reference"),
        outputs=dict(sm.output.items()),
        dataset={
            k: sm.input.get(k, []) for k in ("dataset_plans", "dataset_serves", "dataset_sims")
        },
    ),  # fmt: skip
)
