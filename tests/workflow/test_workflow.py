"""The Snakemake workflow: lint-clean, a dry run of the defaults, bad input stopped before any job,
and a real run of the tiny config (then up to date, and a θ change reruns only plans onward)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # each test starts snakemake (a process and a Snakefile parse)
ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "workflow" / "tiny.yaml"
STAGES = ("import_builtin_model", "profile", "roofline", "indicator", "plan", "simulate", "serve",
          "plan_perplexity", "reference_perplexity", "dataset_prompts", "plan_dataset",
          "serve_dataset", "simulate_dataset", "report")  # fmt: skip


def snakemake(*args, cwd=ROOT, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def dry_run(workdir, *configfiles):
    args = ["--configfile", *map(str, configfiles)] if configfiles else []  # later files win
    return snakemake("-n", "--cores", "2", "--directory", str(workdir), *args)


def jobs_of(proc) -> dict[str, int]:
    """The dry run's "Job stats" table: rule -> count."""
    lines = proc.stdout.split("Job stats:")[1].splitlines()[3:]
    stats = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in a good condition" in proc.stdout + proc.stderr


def test_dry_run_of_the_defaults_has_every_stage_on_both_tracks(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs = jobs_of(proc)
    assert set(STAGES) <= set(jobs), jobs
    assert jobs["plan"] == jobs["simulate"] == 13 * 5  # 13 clusters x (3 baselines + 2 θ)
    assert jobs["serve"] == jobs["plan_perplexity"] == 2 * 5  # the CPU clusters are served
    assert jobs["serve_dataset"] == jobs["plan_dataset"] == 2  # the whole dataset, each CPU one
    assert jobs["simulate_dataset"] == 11 * 5  # every paper-cluster plan on the length histograms
    assert jobs["profile"] == 1  # one device type present: cpu
    assert "train_default_model" not in jobs  # the shipped real model is the default
    trained = write_yaml(tmp_path / "trained.yaml", {"model": {"source": "trained"}})
    jobs = jobs_of(dry_run(tmp_path, trained))
    assert jobs["train_default_model"] == 1 and "import_builtin_model" not in jobs


def stopped(proc, *needles):
    """Snakemake stopped before running any job, with a message holding every needle."""
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Job stats" not in text, text
    for needle in needles:
        assert needle in text, text


def test_bad_config_is_rejected_by_the_schema_naming_the_value(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"model": {"default_preset": "huge"}})
    stopped(dry_run(tmp_path, bad), "huge", "default_preset")


def test_bad_config_type_is_rejected(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"plan": {"theta": ["one"]}})
    stopped(dry_run(tmp_path, bad), "'one' is not of type 'number'", "theta")


def test_missing_checkpoint_is_rejected_naming_the_key(tmp_path):
    missing = {"source": "checkpoint", "checkpoint": str(tmp_path / "nowhere")}
    bad = write_yaml(tmp_path / "bad.yaml", {"model": missing})
    stopped(dry_run(tmp_path, bad), "model.checkpoint", "nowhere")
    unused = write_yaml(tmp_path / "unused.yaml", {"model": {"checkpoint": str(tmp_path / "x")}})
    stopped(dry_run(tmp_path, unused), "model.checkpoint", "model.source: checkpoint")


def cpu_cluster_config(tmp_path, cluster: dict) -> Path:
    write_yaml(tmp_path / "clusters" / "mine.yaml", cluster)
    return write_yaml(
        tmp_path / "bad.yaml",
        {"clusters_dir": str(tmp_path / "clusters"),
         "execution": {"clusters": ["mine"]}, "planning": {"clusters": []}},
    )  # fmt: skip


def test_cluster_file_failing_the_schema_is_rejected_naming_the_key(tmp_path):
    bad = cpu_cluster_config(tmp_path, {"devices": [{"type": "cpu", "count": 0}]})
    stopped(dry_run(tmp_path, bad), "execution.clusters", "mine.yaml", "count")


def test_cluster_with_an_unknown_device_type_is_rejected(tmp_path):
    bad = cpu_cluster_config(tmp_path, {"devices": [{"type": "Z100"}]})
    stopped(dry_run(tmp_path, bad), "execution.clusters", "mine.yaml", "Z100")


def test_missing_cluster_file_is_rejected(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"planning": {"clusters": ["paper_99"]}})
    stopped(dry_run(tmp_path, bad), "planning.clusters", "paper_99.yaml does not exist")


def test_planning_cluster_without_a_model_is_rejected(tmp_path):
    write_yaml(tmp_path / "clusters" / "x.yaml", {"devices": [{"type": "T4"}]})
    bad = write_yaml(
        tmp_path / "bad.yaml",
        {"clusters_dir": str(tmp_path / "clusters"), "execution": {"clusters": []},
         "planning": {"clusters": ["x"]}},
    )  # fmt: skip
    stopped(dry_run(tmp_path, bad), "planning.models", "x")


def test_bad_workload_is_rejected_naming_the_key(tmp_path):
    write_yaml(tmp_path / "workloads" / "w.yaml", {"batch_size": 0, "prompt_len": 8, "gen_len": 4})
    bad = write_yaml(
        tmp_path / "bad.yaml",
        {"workloads_dir": str(tmp_path / "workloads"), "execution": {"workload": "w"}},
    )
    stopped(dry_run(tmp_path, bad), "execution.workload", "w.yaml", "batch_size")


def test_perplexity_target_without_calibration_is_rejected(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"plan": {"ppl_increase_pct": [2]}})
    stopped(dry_run(tmp_path, bad), "plan.ppl_increase_pct", "calibrate_plans")


def test_tiny_config_runs_end_to_end_then_is_up_to_date_and_theta_reruns_only_plans_on(tmp_path):
    proc = snakemake("--cores", "2", "--directory", str(tmp_path), "--configfile", str(TINY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = tmp_path / "results"
    summary = json.loads((results / "models/default.summary.json").read_text())
    assert summary["shape"]["family"] == "llama" and summary["param_count"] > 0
    table = (results / "report/summary.csv").read_text().splitlines()
    assert len(table) == 1 + 2  # (cpu_single, paper_09) x llmpq-theta1
    row = dict(zip(table[0].split(","), table[1].split(","), strict=True))
    assert row["cluster"] == "cpu_single" and row["variant"] == "llmpq-theta1"
    assert float(row["served_tokens_per_s"]) > 0 and float(row["perplexity"]) > 1
    for name in ("throughput", "frontier", "timeline"):
        assert (results / f"report/{name}.png").stat().st_size > 10_000
    served = [json.loads(x) for x in (results / "dataset/cpu_single/serve/outputs.jsonl")
              .read_text().splitlines()]  # fmt: skip
    assert sorted(r["id"] for r in served) == [f"t{i}" for i in range(10)]  # the first 10 lines
    dataset = (results / "report/dataset.md").read_text().splitlines()
    assert len(dataset) == 2 + 1 + 1  # header, cpu_single served, paper_09's plan simulated
    assert "| execution | cpu_single | llmpq | 10 |" in dataset[2]
    outputs = (results / "serve/cpu_single/tiny/llmpq-theta1/outputs.jsonl").read_text()
    assert len(outputs.splitlines()) == 4
    for log in ("model/train_default", "profile/cpu", "indicator/opt-1.3b", "report/report"):
        assert (tmp_path / f"logs/{log}.log").is_file()

    again = dry_run(tmp_path, TINY)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    theta2 = write_yaml(tmp_path / "theta2.yaml", {"plan": {"theta": [2]}})
    rerun = jobs_of(dry_run(tmp_path, TINY, theta2))
    assert rerun == {"plan": 2, "simulate": 2, "serve": 1, "plan_perplexity": 1, "report": 1,
                     "plan_dataset": 1, "serve_dataset": 1, "simulate_dataset": 1,
                     "all": 1}  # fmt: skip

    html = tmp_path / "report.html"
    proc = snakemake("--directory", str(tmp_path), "--configfile", str(TINY), "--report", str(html))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = html.read_text()
    assert "<script src=" not in text and "summary.csv" in text
