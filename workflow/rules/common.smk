# Shared by the rules: the config's names resolved to files, checked before any job runs, and the
# lists of targets. Keep this file small: what a stage needs lives in that stage's .smk.
import re
import shutil

import yaml
from snakemake.exceptions import WorkflowError

from llmpq.cluster import Cluster
from llmpq.dataset_workload import dataset_workload_from_dict
from llmpq.errors import UserError
from llmpq.runtime.slurm import site_gpu_model
from llmpq.workload import Workload

RESULTS, LOGS = config["results"], config["logs"]
METHODS = config["plan"]["methods"]
# Threads of the rules that take the whole machine. Snakemake lowers it to --cores when it runs
# jobs here; on a cluster the profile's set-threads says how many CPUs each such job asks for
# (profiles/slurm), and the job runs with that many.
ALL_CORES = 1024
SRUN = shutil.which("srun")  # SLURM is here: a plan over several hosts is served through srun


def _stop(key, problem):
    """Stop at parse time, before any job, naming the config key."""
    raise WorkflowError(f"config key {key}: {problem}")


def _checked_file(key, folder, name, schema, load):
    """``<folder>/<name>.yaml``, validated by its JSON schema and then by llmpq (``load``)."""
    folder = Path(folder)
    if not folder.is_absolute() and not folder.is_dir():  # run elsewhere (--directory): the shipped files
        folder = Path(workflow.basedir) / folder
    path = folder / f"{name}.yaml"
    if not path.is_file():
        _stop(key, f"{path} does not exist; add the file or fix the name")
    data = yaml.safe_load(path.read_text())
    try:
        validate(data, f"../schemas/{schema}.schema.yaml", set_default=False)
    except WorkflowError as err:
        _stop(key, f"{path} fails the {schema} schema: {err}")
    try:
        return path, load(data, path.stem)
    except UserError as err:
        _stop(key, f"{path}: {err}")


# ---------------------------------------------------------------- the model of the execution track
MODEL_SOURCE = config["model"]["source"]
if config["model"]["checkpoint"] and MODEL_SOURCE != "checkpoint":
    _stop(
        "model.checkpoint",
        f"{config['model']['checkpoint']!r} is given but model.source is {MODEL_SOURCE!r}; "
        "set model.source: checkpoint to use it",
    )
if MODEL_SOURCE == "checkpoint":
    MODEL_DIR = config["model"]["checkpoint"]
    if not MODEL_DIR or not (Path(MODEL_DIR) / "config.json").is_file():
        _stop(
            "model.checkpoint",
            f"{MODEL_DIR!r} is not a HF checkpoint directory (no config.json there); give a local "
            "checkpoint, or set model.source to smollm2-135m or trained",
        )
elif MODEL_SOURCE == "trained":
    MODEL_DIR = f"{RESULTS}/models/default"
else:  # a built-in real model, imported from its GGUF
    MODEL_DIR = f"{RESULTS}/models/{MODEL_SOURCE}"
MODEL_NAME = Path(MODEL_DIR).name  # cost tables and indicators are filed under this name

# ---------------------------------------------------------------- clusters and workloads, by track
EXEC = config["execution"]
PLANNING = config["planning"]
TRACK, CLUSTER_FILE, CLUSTER, WORKLOAD_OF = {}, {}, {}, {}
WORKLOAD_FILE = {}
for track, names, workload in (
    ("execution", EXEC["clusters"], EXEC["workload"]),
    ("planning", PLANNING["clusters"], PLANNING["workload"]),
):
    if names:
        WORKLOAD_FILE[workload], _ = _checked_file(
            f"{track}.workload", config["workloads_dir"], workload, "workload", Workload.from_dict
        )
    for name in names:
        if name in TRACK:
            _stop(f"{track}.clusters", f"{name} is on both tracks; keep it on one")
        CLUSTER_FILE[name], CLUSTER[name] = _checked_file(
            f"{track}.clusters", config["clusters_dir"], name, "cluster", Cluster.from_dict
        )
        TRACK[name], WORKLOAD_OF[name] = track, workload
        if track == "planning" and name not in PLANNING["models"]:
            _stop("planning.models", f"gives no model shape for cluster {name}; add `{name}: opt-30b` (say)")

# ---------------------------------------------------------------- datasets
DATASET = EXEC["dataset"]
DATASET_PROMPTS = DATASET["prompts"] if EXEC["clusters"] else ""
if DATASET_PROMPTS:
    _prompts = Path(DATASET_PROMPTS)
    if not _prompts.is_absolute() and not _prompts.is_file():  # run elsewhere: the shipped file
        _prompts = Path(workflow.basedir) / _prompts
    if not _prompts.is_file():
        _stop("execution.dataset.prompts", f"{DATASET_PROMPTS} does not exist; give a requests "
              "file (llmpq JSONL or OpenAI batch) or \"\" to skip the dataset run")
    DATASET_PROMPTS = str(_prompts)
DATASET_WORKLOAD_FILE = None
if PLANNING["dataset_workload"] and PLANNING["clusters"]:
    DATASET_WORKLOAD_FILE, _ = _checked_file(
        "planning.dataset_workload", config["workloads_dir"], PLANNING["dataset_workload"],
        "dataset_workload", dataset_workload_from_dict,
    )

if config["plan"]["ppl_increase_pct"] and not EXEC["indicator"]["calibrate_plans"]:
    _stop(
        "plan.ppl_increase_pct",
        "a perplexity target needs a calibrated indicator; "
        "set execution.indicator.calibrate_plans (e.g. 16) or empty the list",
    )


def model_of(cluster):
    """The name cost tables and indicators of the cluster's model are filed under."""
    return MODEL_NAME if TRACK[cluster] == "execution" else PLANNING["models"][cluster]


PLANNING_SHAPES = sorted({model_of(c) for c in PLANNING["clusters"]})


def device_types(cluster):
    return sorted(CLUSTER[cluster].type_counts())


def _num(x):
    return f"{x:g}"


def variants(track):
    """Plan file names: one per baseline, one per θ (and ε) of llmpq."""
    out = []
    for method in METHODS:
        if method != "llmpq":
            out.append(method)
            continue
        targets = [f"llmpq-theta{_num(t)}" for t in config["plan"]["theta"]]
        if track == "execution":
            targets += [f"llmpq-eps{_num(e)}" for e in config["plan"]["ppl_increase_pct"]]
        out += targets or ["llmpq"]
    return out


def plan_keys(track=None):
    """(cluster, workload, variant) of every plan, in config order."""
    return [
        (c, WORKLOAD_OF[c], v)
        for c in TRACK
        if track in (None, TRACK[c])
        for v in variants(TRACK[c])
    ]


def per_plan(pattern, track=None):
    return [pattern.format(cluster=c, workload=w, variant=v) for c, w, v in plan_keys(track)]


def cost_tables(wildcards):
    """The cost table of every device type of the cluster, for its model."""
    model = model_of(wildcards.cluster)
    return [f"{RESULTS}/costs/{t}/{model}.nc" for t in device_types(wildcards.cluster)]


wildcard_constraints:
    cluster="|".join(re.escape(c) for c in TRACK) or "NONE",
    workload="[A-Za-z0-9_.-]+",
    variant=r"[a-z]+(-(theta|eps)[0-9.e+-]+)?",
