"""llmpq.report: the summary table matches result files by their place, carries no-plan records,
and the figures are written."""

import json
from pathlib import Path

import pandas as pd

from llmpq.errors import UserError
from llmpq.report import markdown_table, no_plan_reason, no_plan_record, summary_table, write_report


def plan(method: str, tokens_per_s: float, stages: int = 2) -> dict:
    return {
        "schema_version": 1,
        "model": {"id": "results/models/default", "shape": {"name": "default"}},
        "method": method,
        "stages": [{"device": f"d{i}", "bits": [4, 16]} for i in range(stages)],
        "predicted": {"tokens_per_s": tokens_per_s},
        "solver": {"seconds": 0.5, "gap": 0.001 if method == "llmpq" else None},
        "quality": {"theta": 1.0, "sum_omega": 3.0},
    }


def put(root: Path, rel: str, data: dict) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def stage_sim(n: int) -> list[dict]:
    return [{"device": f"d{i}", "prefill_busy_s": 0.1, "decode_busy_s": 0.5} for i in range(n)]


def results(tmp_path: Path) -> dict:
    r = tmp_path / "results"
    no_plan = no_plan_record("pipeedge", "cpu-hetero", UserError("cluster", "x", "add a device"))
    return {
        "plans": [put(r, "plans/cpu/w/llmpq-theta1.json", plan("llmpq", 100.0)),
                  put(r, "plans/cpu/w/pipeedge.json", no_plan),
                  put(r, "plans/p3/paper/llmpq-theta1.json", plan("llmpq", 50.0, 4))],
        "sims": [put(r, "sim/cpu/w/llmpq-theta1.json",
                     {"tokens_per_s": 90.0, "makespan_s": 1.0, "stages": stage_sim(2)}),
                 put(r, "sim/cpu/w/pipeedge.json", no_plan),
                 put(r, "sim/p3/paper/llmpq-theta1.json",
                     {"tokens_per_s": 49.0, "makespan_s": 2.0, "stages": stage_sim(4)})],
        "serves": [put(r, "serve/cpu/w/llmpq-theta1/metrics.json",
                       {"measured": {"tokens_per_s": 25.0, "makespan_s": 1.2},
                        "stages": [{"device": "d0", "busy_s": 0.6}, {"device": "d1", "busy_s": 0.3}]}),
                   put(r, "serve/cpu/w/pipeedge/metrics.json", no_plan)],
        "quality": [put(r, "quality/cpu/w/llmpq-theta1.json", {"perplexity": 55.0}),
                    put(r, "quality/cpu/w/pipeedge.json", no_plan)],
        "reference": put(r, "quality/default/bits16.json", {"perplexity": 50.0}),
    }  # fmt: skip


def test_summary_table_matches_files_by_place_and_keeps_no_plan_rows(tmp_path):
    table = summary_table(**results(tmp_path)).set_index(["cluster", "variant"])
    served = table.loc[("cpu", "llmpq-theta1")]
    assert served.track == "execution" and served.model == "default" and served.bits == "16/4"
    assert served.predicted_tokens_per_s == 100.0 and served.simulated_tokens_per_s == 90.0
    assert served.served_tokens_per_s == 25.0 and served.served_over_predicted == 0.25
    assert abs(served.ppl_increase_pct - 10.0) < 1e-9 and served.solver_gap == 0.001
    missing = table.loc[("cpu", "pipeedge")]
    assert "add a device" in missing.no_plan and pd.isna(missing.served_tokens_per_s)
    planned = table.loc[("p3", "llmpq-theta1")]
    assert planned.track == "planning" and planned.stages == 4 and pd.isna(planned.perplexity)


def test_no_plan_record_round_trip():
    record = no_plan_record("uniform", "c", UserError("cluster", "c", "add a device"))
    assert no_plan_reason(record).startswith("cluster = 'c'")
    assert no_plan_reason(plan("llmpq", 1.0)) is None


def test_markdown_table_blanks_missing_values():
    text = markdown_table(pd.DataFrame({"a": [1.23456, None], "b": ["x|y", "z"]}))
    assert text.splitlines()[2] == "| 1.235 | x\\|y |" and text.splitlines()[3] == "|  | z |"


def test_write_report_writes_table_markdown_and_figures(tmp_path):
    files = results(tmp_path)
    names = {"table": "summary.csv", "markdown": "summary.md", "throughput": "t.png",
             "frontier": "f.png", "timeline": "tl.png"}  # fmt: skip
    outputs = {k: tmp_path / "report" / v for k, v in names.items()}
    table = write_report(files["plans"], files["sims"], files["serves"], files["quality"],
                         reference=files["reference"], outputs=outputs)  # fmt: skip
    assert len(table) == 3
    assert pd.read_csv(outputs["table"]).shape == (3, len(table.columns))
    for key in ("throughput", "frontier", "timeline"):
        assert outputs[key].read_bytes()[:4] == b"\x89PNG"
