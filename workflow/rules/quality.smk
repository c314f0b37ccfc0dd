# Stage "quality": the perplexity of each execution-track plan's quantized model (the weights that
# are served), and of the 16-bit checkpoint as the reference.


rule plan_perplexity:
    input:
        plan=rules.plan.output.plan,
        model=MODEL_DIR,
    output:
        ppl=f"{RESULTS}/quality/{{cluster}}/{{workload}}/{{variant}}.json",
    params:
        method=EXEC["quality_method"],
        group_size=EXEC["group_size"],
    log:
        f"{LOGS}/quality/{{cluster}}/{{workload}}/{{variant}}.log",
    threads: ALL_CORES
    resources:
        slurm_partition=CPU_PARTITION,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/perplexity.py"


rule reference_perplexity:
    input:
        model=MODEL_DIR,
    output:
        ppl=f"{RESULTS}/quality/{MODEL_NAME}/bits16.json",
    params:
        method=EXEC["quality_method"],
        group_size=EXEC["group_size"],
    log:
        f"{LOGS}/quality/{MODEL_NAME}/bits16.log",
    threads: ALL_CORES
    resources:
        slurm_partition=CPU_PARTITION,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/perplexity.py"
