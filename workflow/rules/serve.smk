# Stage "serve": each execution-track plan run for real (torchrun: one process per stage) on the
# devices present; on a cluster scheduler the job asks for the cluster's GPUs.


rule serve:
    input:
        plan=rules.plan.output.plan,
        model=MODEL_DIR,
        cluster=lambda wc: CLUSTER_FILE[wc.cluster],
        prompts=EXEC["serve"]["prompts"] or [],
    output:
        metrics=f"{RESULTS}/serve/{{cluster}}/{{workload}}/{{variant}}/metrics.json",
        outputs=f"{RESULTS}/serve/{{cluster}}/{{workload}}/{{variant}}/outputs.jsonl",
    params:
        temperature=EXEC["serve"]["temperature"],
        seed=EXEC["serve"]["seed"],
        stage_timeout_s=EXEC["serve"]["stage_timeout_s"],
        group_size=EXEC["group_size"],
    log:
        f"{LOGS}/serve/{{cluster}}/{{workload}}/{{variant}}.log",
    # One process per stage, each pinned to its cores: keep other jobs off the machine meanwhile.
    threads: workflow.cores
    resources:
        nodes=lambda wc: len(CLUSTER[wc.cluster].hosts),
        gpu=serve_gpus,
        gpu_model=serve_gpu_model,
        runtime=30,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/serve.py"
