"""The Snakemake workflow: lint-clean, a dry run of the defaults, and a real run of the tiny config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "workflow" / "tiny.yaml"


def snakemake(*args, cwd=ROOT, timeout=600):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "in a good condition" in proc.stdout + proc.stderr


def test_dry_run_of_the_defaults(tmp_path):
    proc = snakemake("-n", "--cores", "2", "--directory", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "train_default_model" in proc.stdout and "model_info" in proc.stdout


def test_bad_config_is_rejected_by_the_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("default_preset: tiny", "default_preset: huge"))
    proc = snakemake("-n", "--cores", "1", "--directory", str(tmp_path), "--configfile", str(bad))
    assert proc.returncode != 0
    assert "huge" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_tiny_config_runs_end_to_end_and_is_then_up_to_date(tmp_path):
    proc = snakemake("--cores", "2", "--directory", str(tmp_path), "--configfile", str(TINY))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "results/models/default.summary.json").read_text())
    assert summary["shape"]["family"] == "llama" and summary["param_count"] > 0
    assert (tmp_path / "results/models/default/model.safetensors").is_file()
    assert (tmp_path / "logs/model/train_default.log").is_file()
    again = snakemake("-n", "--cores", "2", "--directory", str(tmp_path), "--configfile", str(TINY))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
