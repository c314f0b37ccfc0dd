"""``llmpq roofline``: a flagged table, calibration from a measured one, one-line errors."""

from __future__ import annotations

from pathlib import Path

from llmpq.cli import main
from llmpq.costmodel.roofline import roofline_table
from llmpq.costmodel.tables import load_cost_table, save_cost_table
from llmpq.devices import device_type
from llmpq.models.spec import model_spec


def test_roofline_writes_a_flagged_table(capsys, tmp_path: Path) -> None:
    out = tmp_path / "T4" / "opt-30b.nc"
    code = main(["roofline", "--model", "opt-30b", "--device-type", "T4", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.count("\n") == 1 and "16-bit" in stdout
    table = load_cost_table(out, spec=model_spec("opt-30b"), device_type="T4")
    assert table.attrs["source"] == "roofline"


def test_calibrated_from_a_measured_table(capsys, tmp_path: Path) -> None:
    measured = roofline_table(
        model_spec("opt-1.3b"), device_type("A10"), batch=(1, 4), seq=(64, 256)
    )
    path = save_cost_table(measured.assign_attrs(source="measured"), tmp_path / "a10.nc")
    out = tmp_path / "v100.nc"
    code = main(["roofline", "--model", "opt-30b", "--device-type", "V100-32G", "--calibrate",
                 str(path), "--batch", "1,8", "--seq", "128", "--out", str(out)])  # fmt: skip
    assert code == 0 and "calibrated" in capsys.readouterr().out
    assert (
        "calibrated from a measured table of A10" in load_cost_table(out).attrs["efficiency_source"]
    )


def test_bad_input_is_one_line_with_exit_code_2(capsys, tmp_path: Path) -> None:
    out = str(tmp_path / "x.nc")
    code = main(["roofline", "--model", "opt-30b", "--device-type", "T5", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'T5'" in err
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_text("not netcdf")
    code = main(["roofline", "--model", "opt-30b", "--device-type", "T4", "--calibrate",
                 str(corrupt), "--out", out])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(corrupt) in err
    assert not Path(out).exists()
