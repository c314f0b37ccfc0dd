"""Snakemake script of rule import_builtin_model: a built-in real model, imported from its GGUF."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821
from _common import run_logged  # noqa: E402

from llmpq.models.builtin import builtin_gguf  # noqa: E402
from llmpq.models.gguf import import_gguf  # noqa: E402

name = snakemake.wildcards.name  # noqa: F821
out = snakemake.output.model  # noqa: F821
run_logged(
    snakemake.log[0],  # noqa: F821
    lambda: print(import_gguf(builtin_gguf(name), out, overwrite=True, builtin=name)),
)
