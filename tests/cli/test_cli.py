import json
import subprocess
import sys

import pytest

from llmpq.cli import build_parser, main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"catalog", "train-default", "model-info"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_catalog_table_and_json(capsys):
    code, out, _ = run_cli(capsys, "catalog")
    assert code == 0 and "A100-80G" in out and "H100-PCIe" in out
    code, out, _ = run_cli(capsys, "catalog", "--format", "json")
    names = [t["name"] for t in json.loads(out)]
    assert code == 0 and names[0] == "T4" and "cpu" not in names


def test_model_info_of_a_shape(capsys):
    code, out, _ = run_cli(capsys, "model-info", "--model", "llama-2-70b", "--format", "json")
    summary = json.loads(out)
    assert code == 0
    assert summary["param_count"] == 68976648192
    assert summary["kv_bytes_per_token"] == 327680
    assert int(summary["layer_weight_bytes"]["4"]) < int(summary["layer_weight_bytes"]["16"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["model-info", "--model", "gpt-5"], "--model = 'gpt-5'"),
        (["model-info", "--model", "opt-30b", "--group-size", "0"], "group"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_checkpoint_files_name_the_file(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    code, _, err = run_cli(capsys, "model-info", "--model", str(tmp_path))
    assert code == 2 and "safetensors" in err and "Traceback" not in err


def test_console_entry_point_runs_as_a_process():
    proc = subprocess.run(
        [sys.executable, "-m", "llmpq", "model-info", "--model", "nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmpq model-info: error:") and "Traceback" not in proc.stderr
