"""The SLURM path as documented: `snakemake --workflow-profile profiles/slurm --configfile F`
(no --cores) against a fake SLURM (tests/workflow/fake_slurm.py) that records every sbatch and
srun and runs the jobs here. A two-host plan is served by one heterogeneous srun, one launcher
per host (issue 15)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import fake_slurm  # tests/workflow is on sys.path (rootdir conftest + this folder)
import pytest
import yaml

from llmpq.cluster import Cluster
from llmpq.models.spec import NAMED_SHAPES
from llmpq.plan import MicroBatch, Plan, Stage
from llmpq.runtime.slurm import node_requests, srun_command
from llmpq.workload import Workload

ROOT = Path(__file__).resolve().parents[2]
LOCAL_RULES = {"plan", "simulate", "report", "roofline", "model_info", "serve_nodes",
               "serve_dataset_nodes", "plan_dataset", "dataset_prompts", "simulate_dataset"}  # fmt: skip


def _plan(devices: list[str], types: list[str]) -> Plan:
    spec = replace(NAMED_SHAPES["opt-125m"], num_layers=len(devices))
    stages = tuple(Stage(d, t, (i, i + 1), (16,))
                   for i, (d, t) in enumerate(zip(devices, types, strict=True)))  # fmt: skip
    return Plan("m", spec, Workload(1, 8, 2), "manual", stages, MicroBatch(1, 1, 1))


def test_requests_are_typed_per_host_in_pipeline_order():
    cluster = Cluster.from_dict({"name": "mixed", "devices": [
        {"type": "T4", "count": 3, "host": "node-a"}, {"type": "V100-32G", "host": "node-b"},
        {"name": "w", "type": "cpu", "cores": 3, "memory_GiB": 1, "host": "node-c"}]})  # fmt: skip
    names = [d.name for d in cluster.devices]
    plan = _plan([names[3], names[0], names[1], names[2], "w"],
                 ["V100-32G", "T4", "T4", "T4", "cpu"])  # fmt: skip
    models = {"T4": "tesla_t4"}
    reqs = node_requests(plan, cluster, lambda t: models.get(t, t.lower().replace("-", "_")),
                         cpus=8, memory_MB=64000)  # fmt: skip
    assert [r.host for r in reqs] == ["node-b", "node-a", "node-c"]  # stage 0's host first
    assert [r.gpus for r in reqs] == [(("v100_32g", 1),), (("tesla_t4", 3),), ()]
    assert [r.cpus for r in reqs] == [8, 8, 3]  # a CPU worker asks for its cores
    argv = srun_command(reqs, ["llmpq", "serve", "--plan", "p.json"], port=29600, job_name="j",
                        common=["--partition=gpu"])  # fmt: skip
    parts = " ".join(argv).split(" : ")
    assert len(parts) == 3
    assert "--gpus=v100_32g:1" in parts[0] and "--gpus=tesla_t4:3" in parts[1]
    assert "--gpus" not in parts[2] and "--cpus-per-task=3" in parts[2]
    for rank, part in enumerate(parts):
        assert "--nodes=1 --ntasks=1" in part and "--partition=gpu" in part
        assert part.endswith(f"--nnodes 3 --node-rank {rank}")
        assert ":29600" in part and "SLURM_JOB_NODELIST_HET_GROUP_0" in part


def _config(tmp_path: Path, model_dir: Path) -> Path:
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    (clusters / "two_hosts.yaml").write_text(yaml.safe_dump({"name": "two-hosts", "devices": [
        {"name": "cpu-a", "type": "cpu", "memory_MiB": 256, "cores": 1, "host": "node-a"},
        {"name": "cpu-b", "type": "cpu", "memory_MiB": 256, "cores": 1, "host": "node-b"}]}))  # fmt: skip
    config = {
        "results": "results", "logs": "logs", "clusters_dir": str(clusters),
        "workloads_dir": str(ROOT / "tests" / "workflow" / "workloads"),
        "model": {"source": "checkpoint", "checkpoint": str(model_dir)},
        "execution": {
            "clusters": ["two_hosts"], "workload": "tiny",
            "profile": {"bits": [4, 16], "batch": [1, 4], "seq": [16, 32], "rounds": 1,
                        "threads": 1},
            "indicator": {"method": "variance", "calibrate_plans": 0},
            "serve": {"prompts": "", "temperature": 0.0, "seed": 0, "stage_timeout_s": 120},
            "dataset": {"prompts": str(ROOT / "tests" / "workflow" / "prompts.jsonl"),
                        "count": 4, "max_new_tokens": 4},
        },
        "planning": {"workload": "tiny", "dataset_workload": "", "clusters": [], "models": {}},
        "plan": {"methods": ["uniform"], "theta": [1], "ppl_increase_pct": [],
                 "time_limit_s": 5},
    }  # fmt: skip
    path = tmp_path / "my-cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _rule(argv: list[str]) -> str:
    comment = next(a for a in argv if a.startswith("rule_") or a.startswith("'rule_"))
    return comment.strip("'").removeprefix("rule_").split("_wildcards_")[0]


def _value(argv: list[str], flag: str) -> str | None:
    for i, a in enumerate(argv):
        if a == flag:
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


@pytest.mark.slow
def test_the_slurm_profile_runs_as_documented(tmp_path, tiny_default):
    model = tiny_default
    work = tmp_path / "work"
    work.mkdir()
    state = tmp_path / "slurm"
    bin_dir = fake_slurm.install(tmp_path / "bin")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_SLURM_DIR=str(state), HF_HUB_OFFLINE="1")  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--workflow-profile", str(ROOT / "profiles" / "slurm"),
           "--configfile", str(_config(tmp_path, model)), "--directory", str(work),
           "--slurm-init-seconds-before-status-checks", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    assert (work / "results" / "report" / "summary.csv").is_file()

    submitted = fake_slurm.calls(state, "sbatch")
    rules = sorted(_rule(a) for a in submitted)
    # the heavy rules are jobs; planning, simulation, the report and the srun serves are not
    assert rules == ["indicator", "plan_perplexity", "profile", "reference_perplexity"], rules
    assert not LOCAL_RULES & set(rules)
    by_rule = {_rule(a): " ".join(a) for a in submitted}
    assert "--cpus-per-task=4" in by_rule["profile"]  # the profile's set-threads
    assert "--cpus-per-task=8" in by_rule["indicator"]
    assert "--mem 32000" in by_rule["indicator"] and "-t 60" in by_rule["indicator"]
    assert all("--gpus" not in line for line in by_rule.values())  # CPU workers only
    assert all(" -p cpu" in line for line in by_rule.values())  # and the CPU partition

    # one srun per multi-host serve (the jobstep's srun inside each sbatch job aside)
    steps = {_value(a, "--job-name"): a for a in fake_slurm.calls(state, "srun")
             if a[0].startswith("--job-name=llmpq-")}  # fmt: skip
    assert len(steps) == 2, steps
    dataset_plan = json.loads(
        (work / "results" / "dataset" / "two_hosts" / "plan.json").read_text()
    )
    dataset_hosts = len({s["device"] for s in dataset_plan["stages"]})  # one device per host here
    for name, argv in steps.items():
        parts = " ".join(argv).split(" : ")
        assert len(parts) == (2 if "serve-two_hosts-tiny-uniform" in name else dataset_hosts)
        for rank, part in enumerate(parts):
            assert "--nodes=1 --ntasks=1 --cpus-per-task=1 --mem=64000" in part
            assert "--partition=cpu" in part  # CPU workers: not the GPU partition
            assert f"--nnodes {len(parts)} --node-rank {rank}" in part
    serve = work / "results" / "serve" / "two_hosts" / "tiny" / "uniform"
    metrics = json.loads((serve / "metrics.json").read_text())
    assert metrics["num_stages"] == 2 and metrics["measured"]["tokens_per_s"] > 0
    outputs = (work / "results" / "dataset" / "two_hosts" / "serve" / "outputs.jsonl").read_text()
    assert len(outputs.splitlines()) == 4


@pytest.mark.slow
def test_a_multi_host_cluster_without_srun_stops_before_any_job(tmp_path, tiny_default):
    model = tiny_default
    work = tmp_path / "work"
    work.mkdir()
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not (Path(p) / "srun").exists())  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
           "--cores", "2", "--configfile", str(_config(tmp_path, model)), "--directory",
           str(work)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PATH=path), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Job stats" not in text, text
    assert "execution.clusters" in text and "node-a, node-b" in text and "srun" in text


@pytest.mark.slow
def test_gpu_requests_are_typed_per_device_type(tmp_path, tiny_default):
    """A T4 host beside a V100 host: one profile job per type with the site's model name, and
    the serve goes through srun (serve_nodes, on the login node)."""
    config = yaml.safe_load(_config(tmp_path, tiny_default).read_text())
    (tmp_path / "clusters" / "gpus.yaml").write_text(yaml.safe_dump({"name": "gpus", "devices": [
        {"type": "T4", "count": 2, "host": "node-a"}, {"type": "V100-32G", "host": "node-b"}]}))  # fmt: skip
    config["execution"]["clusters"] = ["gpus"]
    config["execution"]["dataset"]["prompts"] = ""
    config["slurm_gpu_models"] = {"T4": "tesla_t4"}
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    bin_dir = fake_slurm.install(tmp_path / "bin")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               FAKE_SLURM_DIR=str(tmp_path / "slurm"))  # fmt: skip
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n",
           "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(path),
           "--directory", str(tmp_path / "work")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    typed = sorted(re.findall(r"gpu=1, gpu_model=([A-Za-z0-9_.]+)", text))
    assert typed == ["tesla_t4", "v100_32g"], text[-4000:]  # one profile job per type
    assert re.findall(r"gpu_model=[a-z0-9_]+, slurm_partition=(\w+)", text) == ["gpu", "gpu"]
    assert "slurm_partition=cpu" in text  # the indicator, perplexity: the CPU partition
    assert "rule serve_nodes:" in text and "rule serve:" not in text  # served through srun
