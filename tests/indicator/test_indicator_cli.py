"""``llmpq indicator``: the file and summary, and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmpq.cli import main
from llmpq.indicator import calibration_of, load_indicator
from llmpq.models.spec import model_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["indicator", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_variance_with_calibration_writes_a_checked_file(
    tiny_default: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tiny.nc"
    code, stdout, _ = _run(
        capsys, "--model", str(tiny_default), "--num-windows", "4", "--window-tokens", "64",
        "--calibrate", "3", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    assert stdout.count("\n") == 1 and "variance ω" in stdout and "calibrated on 3 plans" in stdout
    da = load_indicator(out, model_spec(tiny_default))
    assert da.attrs["method"] == "variance"
    assert calibration_of(da).points == 3 and calibration_of(da).slope_pct_per_omega > 0


def test_shape_name_gets_the_analytic_indicator(tmp_path: Path, capsys) -> None:
    out = tmp_path / "opt.nc"
    code, stdout, _ = _run(capsys, "--model", "opt-30b", "--method", "analytic", "--out", str(out))
    assert code == 0 and "analytic ω for opt-30b (48 layers)" in stdout
    assert load_indicator(out, model_spec("opt-30b")).sizes["layer"] == 48


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "opt-30b", "--method", "magic"], "choose one of"),
        (["--model", "opt-30b"], "needs weights"),
        (["--model", "opt-30b", "--method", "analytic", "--calibrate", "4"], "is a shape name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.nc"
    code, stdout, stderr = _run(capsys, *argv, "--out", str(out))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_short_calibration_text_and_wrong_shape_file_exit_2(
    tiny_default: Path, tmp_path: Path, capsys
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("import os\n" * 30)
    out = tmp_path / "x.nc"
    code, _, stderr = _run(capsys, "--model", str(tiny_default), "--calib", str(short),
                           "--out", str(out))  # fmt: skip
    assert code == 2 and "calibration text" in stderr and "tokens" in stderr
    other = tmp_path / "opt.nc"
    assert _run(capsys, "--model", "opt-30b", "--method", "random", "--out", str(other))[0] == 0
    code, _, stderr = _run(capsys, "--model", str(tiny_default), "--from", str(other),
                           "--out", str(out))  # fmt: skip
    assert code == 2 and "another model shape" in stderr and stderr.count("\n") == 1
    assert not out.exists()
