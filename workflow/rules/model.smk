# Stage "model": the checkpoint of the execution track. With `model.checkpoint` empty, the built-in
# default model is trained here (offline, from text that ships with Python); otherwise the local
# HF checkpoint named there is used as is.


rule train_default_model:
    output:
        model=directory(f"{config['results']}/models/default"),
    params:
        preset=config["model"]["default_preset"],
        seed=config["model"]["seed"],
    log:
        f"{config['logs']}/model/train_default.log",
    threads: workflow.cores
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
