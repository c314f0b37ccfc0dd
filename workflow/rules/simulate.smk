# Stage "simulate": every plan played event by event on its cluster's cost tables (both tracks).


rule simulate:
    input:
        plan=rules.plan.output.plan,
        cluster=lambda wc: CLUSTER_FILE[wc.cluster],
        costs=cost_tables,
    output:
        sim=f"{RESULTS}/sim/{{cluster}}/{{workload}}/{{variant}}.json",
    params:
        costs_dir=f"{RESULTS}/costs",
    log:
        f"{LOGS}/simulate/{{cluster}}/{{workload}}/{{variant}}.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/simulate.py"
