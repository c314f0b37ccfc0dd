"""The conda environment names every runtime requirement; CI installs the CPU torch pin first."""

import re
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAME = {"torch": "pytorch", "mip": "python-mip"}  # PyPI name -> conda-forge/pytorch name


def conda_names() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            names.add(re.split(r"[<>=! ]", dep, maxsplit=1)[0].lower())
    return names


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_names_every_runtime_requirement():
    project = pyproject()["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in ("notebooks", "dev"):
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    have = conda_names()
    for req in requirements:
        name = req.name.lower()
        assert CONDA_NAME.get(name, name) in have, f"environment.yml lacks {req.name}"
        for extra in req.extras:  # h5netcdf[h5py] needs h5py itself in conda
            assert extra.lower() in have, f"environment.yml lacks {extra} (extra of {req.name})"


def test_declared_stack_is_required():
    names = {Requirement(r).name.lower() for r in pyproject()["project"]["dependencies"]}
    assert {"torch", "transformers", "mip", "snakemake", "xarray", "scipy", "tokenizers",
            "safetensors", "h5netcdf"} <= names  # fmt: skip
    notebooks = {
        Requirement(r).name for r in pyproject()["project"]["optional-dependencies"]["notebooks"]
    }
    assert {"jupyterlab", "ipywidgets"} <= notebooks


def test_torch_is_a_range_and_ci_pins_the_cpu_wheel_first():
    torch_req = next(
        Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("torch")
    )
    assert "2.13.0" in torch_req.specifier and "==" not in str(torch_req.specifier)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("torch==2.13.0") < ci.index('pip install -q -e ".[dev]"')
    readme = (ROOT / "README.md").read_text()
    assert "pip install torch==2.13.0" in readme
    assert "python -m pytest" in ci and "python -m pytest" in readme
    assert "--durations=25" in ci  # CI prints the 25 slowest tests
    assert 'python -m pytest -q -m "not slow"' in readme  # the inner loop, in Contributing


def test_console_script_points_at_the_cli():
    assert pyproject()["project"]["scripts"]["llmpq"] == "llmpq.cli:main"


def test_what_the_snakefile_imports_leaves_torch_unloaded():
    """Every Snakefile parse (each `snakemake` call, each submitted job) imports these modules;
    torch and transformers cost ~3 s a parse, so they load only where a stage runs."""
    import subprocess
    import sys

    code = ("import sys, llmpq.cluster, llmpq.dataset_workload, llmpq.errors, llmpq.workload, "
            "llmpq.runtime, llmpq.runtime.slurm; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
