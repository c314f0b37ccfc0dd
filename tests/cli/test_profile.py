"""``llmpq profile``: a table and one summary line; bad input is one line and exit code 2.

A built-in shape (random weights, one layer) keeps it fast and needs no checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmpq.cli import main
from llmpq.costmodel.tables import load_cost_table

QUICK = ["--model", "opt-125m", "--stack-layers", "1", "--rounds", "1", "--repeats", "1",
         "--warmup", "0", "--no-progress"]  # fmt: skip


def test_profile_writes_a_table(capsys, tmp_path: Path) -> None:
    out = tmp_path / "costs" / "cpu" / "opt-125m.nc"
    code = main(["profile", *QUICK, "--out", str(out), "--bits", "4,16", "--batch", "1,2",
                 "--seq", "8"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.count("\n") == 1 and str(out) in stdout
    table = load_cost_table(out)
    assert table.bits.values.tolist() == [4, 16] and table.batch.values.tolist() == [1, 2]
    assert table.attrs["threads"] == 1 and table.attrs["model"] == "opt-125m"


@pytest.mark.parametrize(
    ("flags", "field"),
    [(["--bits", "4,5"], "grid.bits"), (["--batch", "1,x"], "--batch"),
     (["--device", "cuda:7"], "--device"), (["--clock", "gpu"], "--clock"),
     (["--threads", "0"], "--threads")],
)  # fmt: skip
def test_bad_flags_are_one_line(capsys, tmp_path: Path, flags, field) -> None:
    if field == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["profile", *QUICK, "--out", str(tmp_path / "x.nc"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and field in err
    assert not (tmp_path / "x.nc").exists()
