# Stage "indicator": ω(layer, bits) of each model. The checkpoint gets the configured indicator
# (optionally with its perplexity calibration); a shape name without weights the analytic one.


rule indicator:
    input:
        unpack(indicator_model_input),
    output:
        omega=f"{RESULTS}/indicator/{{model}}.nc",
    params:
        model=lambda wc: MODEL_DIR if wc.model == MODEL_NAME else wc.model,
        method=lambda wc: EXEC["indicator"]["method"] if wc.model == MODEL_NAME else "analytic",
        calibrate_plans=lambda wc: (
            EXEC["indicator"]["calibrate_plans"] if wc.model == MODEL_NAME else 0
        ),
    log:
        f"{LOGS}/indicator/{{model}}.log",
    threads: ALL_CORES
    resources:
        slurm_partition=CPU_PARTITION,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/indicator.py"
