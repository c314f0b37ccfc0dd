# Stage "serve": each execution-track plan run for real (torchrun: one process per stage) on the
# devices present. A cluster on one host is one job (on SLURM: one node, --gpus=<model>:n); one
# over several hosts (or, on SLURM, one host with two GPU types) is served by `serve_nodes`,
# which runs where snakemake runs and starts one heterogeneous srun: one component per host,
# each asking for that host's GPU types and counts and running the per-node `llmpq serve`
# (llmpq/runtime/slurm.py).


rule serve:
    input:
        plan=rules.plan.output.plan,
        model=MODEL_DIR,
        cluster=lambda wc: CLUSTER_FILE[wc.cluster],
        prompts=EXEC["serve"]["prompts"] or [],
    output:
        metrics=f"{RESULTS}/serve/{{cluster}}/{{workload}}/{{variant}}/metrics.json",
        outputs=f"{RESULTS}/serve/{{cluster}}/{{workload}}/{{variant}}/outputs.jsonl",
    wildcard_constraints:
        cluster=_names(ONE_JOB),
    params:
        launch="here",
        temperature=EXEC["serve"]["temperature"],
        seed=EXEC["serve"]["seed"],
        stage_timeout_s=EXEC["serve"]["stage_timeout_s"],
        group_size=EXEC["group_size"],
        gpu_models=config["slurm_gpu_models"],
    log:
        f"{LOGS}/serve/{{cluster}}/{{workload}}/{{variant}}.log",
    # One process per stage, each pinned to its cores: keep other jobs off the machine meanwhile.
    threads: ALL_CORES
    resources:
        nodes=1,
        gpu=serve_gpus,
        gpu_model=serve_gpu_model,
        slurm_partition=serve_partition,
        runtime=30,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/serve.py"


use rule serve as serve_nodes with:
    wildcard_constraints:
        cluster=_names(BY_SRUN),
    params:
        launch="srun",
        temperature=EXEC["serve"]["temperature"],
        seed=EXEC["serve"]["seed"],
        stage_timeout_s=EXEC["serve"]["stage_timeout_s"],
        group_size=EXEC["group_size"],
        gpu_models=config["slurm_gpu_models"],
    # It only waits for srun; each node's launcher gets its CPUs from srun (resources below).
    threads: 1
    resources:
        slurm_partition=serve_partition,
        runtime=30,
