# Stage "roofline": cost tables of the planning track's catalog GPUs, from their datasheet peaks
# (optionally scaled by the efficiency the execution track measured), one job per (type, shape).


rule roofline:
    input:
        calibrate=measured_for_calibration,
    output:
        table=f"{RESULTS}/costs/{{device_type}}/{{shape}}.nc",
    log:
        f"{LOGS}/roofline/{{device_type}}/{{shape}}.log",
    wildcard_constraints:
        shape="|".join(re.escape(s) for s in PLANNING_SHAPES) or "NONE",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/roofline.py"
