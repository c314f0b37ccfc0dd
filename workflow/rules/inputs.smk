# Input, parameter and resource functions of the rules, one section per stage (snakemake --lint
# wants functions apart from rules). Names come from common.smk.

# ---------------------------------------------------------------- profile
PROFILED_TYPES = sorted({t for c in EXEC["clusters"] for t in device_types(c)})


def slurm_gpu_model(device_type):
    """The site's GPU model name of a catalog type (config: slurm_gpu_models)."""
    return site_gpu_model(device_type, config["slurm_gpu_models"])


CPU_PARTITION = config["slurm_partitions"]["cpu"]


def profile_partition(wildcards):
    """The SLURM partition of a profile job: the GPU one only for a GPU type."""
    return config["slurm_partitions"]["cpu" if wildcards.device_type == "cpu" else "gpu"]


# ---------------------------------------------------------------- roofline
def measured_for_calibration(wildcards):
    if not (PLANNING["roofline_calibrate"] and PROFILED_TYPES):
        return []
    return [f"{RESULTS}/costs/{PROFILED_TYPES[0]}/{MODEL_NAME}.nc"]


# ---------------------------------------------------------------- indicator
def indicator_model_input(wildcards):
    return {"model": MODEL_DIR} if wildcards.model == MODEL_NAME else {}


# ---------------------------------------------------------------- plan
def quality_target(variant):
    """``llmpq-theta1`` -> {"theta": 1.0}; ``llmpq-eps2`` -> {"ppl_increase_pct": 2.0}."""
    if "-theta" in variant:
        return {"theta": float(variant.split("-theta")[1])}
    if "-eps" in variant:
        return {"ppl_increase_pct": float(variant.split("-eps")[1])}
    return {}


def plan_inputs(wildcards):
    c = wildcards.cluster
    inputs = {
        "cluster": CLUSTER_FILE[c],
        "workload": WORKLOAD_FILE[WORKLOAD_OF[c]],
        "indicator": f"{RESULTS}/indicator/{model_of(c)}.nc",
        "costs": cost_tables(wildcards),
    }
    if TRACK[c] == "execution":
        inputs["model"] = MODEL_DIR
    return inputs


# ---------------------------------------------------------------- serve: one job, or one srun
def _gpu_types(cluster):
    return {d.type.name for d in CLUSTER[cluster].devices} - {"cpu"}


# Served by one srun with a component per host (rules serve_nodes, serve_dataset_nodes): every
# cluster over several hosts, and, where SLURM is, one host with two GPU types (a single
# --gpus=<model>:n request cannot ask for both). The others are one job each (serve).
BY_SRUN = [
    c for c in EXEC["clusters"]
    if len(CLUSTER[c].hosts) > 1 or (SRUN and len(_gpu_types(c)) > 1)
]
ONE_JOB = [c for c in EXEC["clusters"] if c not in BY_SRUN]
if BY_SRUN and not SRUN:
    _stop(
        "execution.clusters",
        f"{BY_SRUN[0]} spans hosts {', '.join(CLUSTER[BY_SRUN[0]].hosts)}: the workflow "
        "serves it with one srun (SLURM) launcher per host, and srun is not on PATH here; run "
        "from a SLURM login node (profiles/slurm), serve it by hand with `llmpq serve --nnodes` "
        "on each host (README: Serving across several machines), or move it to planning.clusters",
    )


def _names(clusters):
    return "|".join(re.escape(c) for c in clusters) or "NONE"


# ---------------------------------------------------------------- serve
def serve_gpus(wildcards):
    """The GPUs of a cluster served as one job (one host; srun asks per host otherwise)."""
    return sum(d.type.name != "cpu" for d in CLUSTER[wildcards.cluster].devices)


def serve_partition(wildcards):
    """The SLURM partition of a serve: the GPU one when any of its devices is a GPU."""
    return config["slurm_partitions"]["gpu" if _gpu_types(wildcards.cluster) else "cpu"]


def serve_gpu_model(wildcards):
    """Their type as the site names it (two types on one host go through srun where SLURM is;
    elsewhere the job runs here and asks nothing of a scheduler)."""
    types = _gpu_types(wildcards.cluster)
    return slurm_gpu_model(types.pop()) if len(types) == 1 else ""


# ---------------------------------------------------------------- dataset
DATASET_VARIANT = next((v for v in variants("execution") if v.startswith("llmpq")), "llmpq")


def plan_dataset_inputs(wildcards):
    c = wildcards.cluster
    return {
        "cluster": CLUSTER_FILE[c],
        "prompts": rules.dataset_prompts.output[0],
        "indicator": f"{RESULTS}/indicator/{MODEL_NAME}.nc",
        "costs": cost_tables(wildcards),
        "model": MODEL_DIR,
    }


def dataset_runs():
    """The execution track's dataset runs (one per cluster) and the planning track's dataset
    simulations (one per plan)."""
    serves = [rules.serve_dataset.output.metrics.format(cluster=c)
              for c in EXEC["clusters"]] if DATASET_PROMPTS else []  # fmt: skip
    plans = [rules.plan_dataset.output.plan.format(cluster=c)
             for c in EXEC["clusters"]] if DATASET_PROMPTS else []  # fmt: skip
    sims = per_plan(rules.simulate_dataset.output.sim, "planning") if DATASET_WORKLOAD_FILE else []
    return {"dataset_plans": plans, "dataset_serves": serves, "dataset_sims": sims}


# ---------------------------------------------------------------- report
def report_inputs(wildcards):
    inputs = {
        "plans": per_plan(rules.plan.output.plan),
        "sims": per_plan(rules.simulate.output.sim),
        "serves": per_plan(rules.serve.output.metrics, "execution"),
        "quality": per_plan(rules.plan_perplexity.output.ppl, "execution"),
    }
    inputs |= dataset_runs()
    if EXEC["clusters"]:
        inputs["reference"] = rules.reference_perplexity.output.ppl
    return inputs
