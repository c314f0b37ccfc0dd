"""Snakemake script of rule train_default_model: train the built-in default model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.models.default import train_default_model  # noqa: E402

run_logged(
    snakemake.log[0],  # noqa: F821
    lambda: train_default_model(
        snakemake.output.model,  # noqa: F821
        preset=snakemake.params.preset,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
        overwrite=True,
        num_threads=snakemake.threads,  # noqa: F821
    ),
    threads=snakemake.threads,  # noqa: F821
)
