# llmpq main job: `snakemake --cores all` (see README). Table of contents only; rules live in
# workflow/rules/, one file per stage, and their scripts in workflow/scripts/.
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The defaults live beside this Snakefile; `--configfile my.yaml` overrides them key by key.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"


rule all:
    input:
        rules.model_info.output.summary,
    default_target: True
