"""``llmpq plan`` / ``llmpq simulate``: JSON out, --check, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpq.cli import main

PAPER03 = "config/clusters/paper_03.yaml"
WORKLOAD = "config/workloads/paper.yaml"


def test_plan_simulate_and_check(capsys, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    args = ["plan", "--model", "opt-30b", "--cluster", PAPER03, "--workload", WORKLOAD,
            "--costs", str(tmp_path), "--theta", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    plan = json.loads(out.read_text())
    assert plan["schema_version"] == 1 and plan["method"] == "llmpq"
    layers = [s["layers"] for s in plan["stages"]]
    assert layers[0][0] == 0 and layers[-1][1] == 48
    assert all(a[1] == b[0] for a, b in zip(layers, layers[1:], strict=False))
    assert plan["solver"]["status"] == "OPTIMAL" and plan["solver"]["gap"] <= 0.002
    assert "tokens/s" in capsys.readouterr().out

    sim = tmp_path / "sim.json"
    assert main(["simulate", "--plan", str(out), "--costs", str(tmp_path), "--out", str(sim)]) == 0
    result = json.loads(sim.read_text())
    assert result["tokens_per_s"] == pytest.approx(plan["predicted"]["tokens_per_s"], rel=0.01)
    assert len(result["stages"]) == len(plan["stages"])

    assert main(["plan", "--check", str(out), "--cluster", PAPER03]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_names_what_is_wrong(capsys, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    main(["plan", "--model", "opt-30b", "--cluster", PAPER03, "--workload", WORKLOAD,
          "--costs", str(tmp_path), "--method", "uniform", "--out", str(out)])  # fmt: skip
    capsys.readouterr()
    plan = json.loads(out.read_text())
    plan["stages"][0]["bits"] = [16] * len(plan["stages"][0]["bits"])  # 16-bit 12 layers on a T4
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(plan))
    assert main(["plan", "--check", str(bad), "--cluster", PAPER03]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stages[0]" in err and "GiB" in err
    plan["stages"][0]["layers"] = [1, plan["stages"][0]["layers"][1]]  # layer 0 missing
    bad.write_text(json.dumps(plan))
    assert main(["plan", "--check", str(bad), "--cluster", PAPER03]) == 2
    assert "start at layer 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "magic"], "method = 'magic'"),
        (["--theta", "1", "--model", "gpt-9"], "gpt-9"),
        (["--time-limit", "0"], "time limit"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path: Path, extra, needle) -> None:
    out = tmp_path / "plan.json"
    args = ["plan", "--model", "opt-30b", "--cluster", PAPER03, "--workload", WORKLOAD,
            "--costs", str(tmp_path), "--out", str(out), *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_a_cluster_that_cannot_hold_the_model(capsys, tmp_path: Path) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text("name: small\ndevices:\n  - {type: T4, count: 2}\n")
    out = tmp_path / "plan.json"
    assert main(["plan", "--model", "opt-66b", "--cluster", str(cluster), "--workload",
                 WORKLOAD, "--costs", str(tmp_path), "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "cannot hold the model" in err and "add a device" in err and not out.exists()


def test_report_collects_plans_and_simulations(capsys, tmp_path: Path) -> None:
    results = tmp_path / "results"
    for method in ("llmpq", "pipeedge"):
        plan = results / "plans" / "paper_03" / "paper" / f"{method}.json"
        assert main(["plan", "--model", "opt-30b", "--cluster", PAPER03, "--workload", WORKLOAD,
                     "--costs", str(tmp_path), "--method", method, "--theta", "1",
                     "--out", str(plan)]) == 0  # fmt: skip
        sim = results / "sim" / "paper_03" / "paper" / f"{method}.json"
        assert main(["simulate", "--plan", str(plan), "--costs", str(tmp_path),
                     "--out", str(sim)]) == 0  # fmt: skip
    out = tmp_path / "report"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert "2 rows from 2 plans, 2 simulations" in capsys.readouterr().out
    csv = (out / "summary.csv").read_text()
    assert "pipeedge" in csv and "llmpq" in csv
    assert all((out / f).stat().st_size > 0 for f in ("throughput.png", "frontier.png",
                                                      "timeline.png", "summary.md"))  # fmt: skip
    assert main(["report", "--results", str(tmp_path / "none"), "--out", str(out)]) == 2
