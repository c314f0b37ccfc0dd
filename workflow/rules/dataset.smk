# Stage "dataset": the whole offline job. Execution track: plan llmpq for the requests file (the
# planner chooses how many sequences are in flight) and serve every request, slots refilled as
# sequences end (over several hosts: serve_dataset_nodes, one srun, as serve_nodes). Planning track: every plan also simulated on the dataset workload's length
# distribution, refilled and one batch at a time.


rule dataset_prompts:
    input:
        DATASET_PROMPTS or [],
    output:
        f"{RESULTS}/dataset/prompts.jsonl",
    params:
        first=DATASET["count"],
    log:
        f"{LOGS}/dataset/prompts.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/dataset_prompts.py"


rule plan_dataset:
    input:
        unpack(plan_dataset_inputs),
    output:
        plan=f"{RESULTS}/dataset/{{cluster}}/plan.json",
    params:
        model=MODEL_DIR,
        target=lambda wc: quality_target(DATASET_VARIANT),
        costs_dir=f"{RESULTS}/costs",
        max_new_tokens=DATASET["max_new_tokens"],
        solver=config["plan"]["solver"],
        time_limit_s=config["plan"]["time_limit_s"],
        gap=config["plan"]["gap"],
    log:
        f"{LOGS}/dataset/{{cluster}}/plan.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/plan_dataset.py"


rule serve_dataset:
    input:
        plan=rules.plan_dataset.output.plan,
        model=MODEL_DIR,
        cluster=lambda wc: CLUSTER_FILE[wc.cluster],
        prompts=rules.dataset_prompts.output[0],
    output:
        metrics=f"{RESULTS}/dataset/{{cluster}}/serve/metrics.json",
        outputs=f"{RESULTS}/dataset/{{cluster}}/serve/outputs.jsonl",
    wildcard_constraints:
        cluster=_names(ONE_JOB),
    params:
        launch="here",
        max_new_tokens=DATASET["max_new_tokens"],
        temperature=EXEC["serve"]["temperature"],
        seed=EXEC["serve"]["seed"],
        stage_timeout_s=EXEC["serve"]["stage_timeout_s"],
        group_size=EXEC["group_size"],
        gpu_models=config["slurm_gpu_models"],
    log:
        f"{LOGS}/dataset/{{cluster}}/serve.log",
    # One process per stage, each pinned to its cores: keep other jobs off the machine meanwhile.
    threads: ALL_CORES
    resources:
        nodes=1,
        gpu=serve_gpus,
        gpu_model=serve_gpu_model,
        slurm_partition=serve_partition,
        runtime=60,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/serve_dataset.py"


# Over several hosts: one heterogeneous srun from where snakemake runs (as rule serve_nodes).
use rule serve_dataset as serve_dataset_nodes with:
    wildcard_constraints:
        cluster=_names(BY_SRUN),
    params:
        launch="srun",
        max_new_tokens=DATASET["max_new_tokens"],
        temperature=EXEC["serve"]["temperature"],
        seed=EXEC["serve"]["seed"],
        stage_timeout_s=EXEC["serve"]["stage_timeout_s"],
        group_size=EXEC["group_size"],
        gpu_models=config["slurm_gpu_models"],
    threads: 1
    resources:
        slurm_partition=serve_partition,
        runtime=60,


rule simulate_dataset:
    input:
        plan=rules.plan.output.plan,
        cluster=lambda wc: CLUSTER_FILE[wc.cluster],
        costs=cost_tables,
        dataset=DATASET_WORKLOAD_FILE or [],
    output:
        sim=f"{RESULTS}/sim_dataset/{{cluster}}/{{workload}}/{{variant}}.json",
    params:
        costs_dir=f"{RESULTS}/costs",
    log:
        f"{LOGS}/simulate_dataset/{{cluster}}/{{workload}}/{{variant}}.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/simulate_dataset.py"
