"""Snakemake script of rule dataset_prompts: the first N requests of the dataset file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.runtime.requests import first_requests  # noqa: E402

sm = snakemake  # noqa: F821

run_logged(sm.log[0], lambda: first_requests(sm.input[0], sm.output[0], sm.params.first))
