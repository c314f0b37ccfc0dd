# Stage "profile": the measured cost table of each device type of the execution track's clusters,
# one job per type (on a cluster scheduler: a node with that GPU type), for the checkpoint.


rule profile:
    input:
        model=MODEL_DIR,
    output:
        table=f"{RESULTS}/costs/{{device_type}}/{MODEL_NAME}.nc",
    params:
        device=lambda wc: "cpu" if wc.device_type == "cpu" else "cuda",
        grid=EXEC["profile"],
        group_size=EXEC["group_size"],
    log:
        f"{LOGS}/profile/{{device_type}}.log",
    wildcard_constraints:
        device_type="|".join(re.escape(t) for t in PROFILED_TYPES) or "NONE",
    # The whole machine: timings taken beside other jobs would be the other jobs' timings.
    threads: ALL_CORES
    resources:
        gpu=lambda wc: 0 if wc.device_type == "cpu" else 1,
        gpu_model=lambda wc: "" if wc.device_type == "cpu" else slurm_gpu_model(wc.device_type),
        slurm_partition=profile_partition,
        runtime=30,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/profile_costs.py"
