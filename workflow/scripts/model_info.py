"""Snakemake script of rule model_info: the model's shape and sizes as JSON."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.cli.model_info import model_summary  # noqa: E402
from llmpq.files import write_json_atomic  # noqa: E402
from llmpq.models.spec import model_spec  # noqa: E402

run_logged(
    snakemake.log[0],  # noqa: F821
    lambda: write_json_atomic(
        snakemake.output.summary,  # noqa: F821
        model_summary(model_spec(snakemake.input.model)),  # noqa: F821
    ),
)
