# Stage "plan": one plan per cluster, method and quality target (the θ or ε sweep of llmpq).
# A method that cannot fit the model on a cluster writes a record saying so (the report shows it)
# instead of failing the workflow; bad input still fails.


rule plan:
    input:
        unpack(plan_inputs),
    output:
        plan=f"{RESULTS}/plans/{{cluster}}/{{workload}}/{{variant}}.json",
    params:
        model=lambda wc: MODEL_DIR if TRACK[wc.cluster] == "execution" else model_of(wc.cluster),
        method=lambda wc: wc.variant.split("-")[0],
        target=lambda wc: quality_target(wc.variant),
        costs_dir=f"{RESULTS}/costs",
        solver=config["plan"]["solver"],
        time_limit_s=config["plan"]["time_limit_s"],
        gap=config["plan"]["gap"],
    log:
        f"{LOGS}/plan/{{cluster}}/{{workload}}/{{variant}}.log",
    resources:
        runtime=lambda wc: 5 + int(config["plan"]["time_limit_s"] // 60),
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/plan.py"
