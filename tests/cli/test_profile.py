"""``llmpq profile``: a table and one summary line; bad input is one line and exit code 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llmpq.cli import main
from llmpq.costmodel.tables import load_cost_table
from llmpq.models.default import train_default_model


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-profile") / "tiny"
    train_default_model(out, preset="tiny", max_train_seconds=0, progress=False, num_threads=1)
    return out


def test_profile_writes_a_table(capsys, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "costs" / "cpu" / "tiny.nc"
    code = main(["profile", "--model", str(model_dir), "--out", str(out), "--bits", "4,16",
                 "--batch", "1,2", "--seq", "8", "--rounds", "1", "--repeats", "1",
                 "--no-progress"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0 and stdout.count("\n") == 1 and str(out) in stdout
    table = load_cost_table(out)
    assert table.bits.values.tolist() == [4, 16] and table.batch.values.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("flags", "field"),
    [(["--bits", "4,5"], "grid.bits"), (["--batch", "1,x"], "--batch"),
     (["--device", "cuda:7"], "--device"), (["--clock", "gpu"], "--clock")],
)  # fmt: skip
def test_bad_flags_are_one_line(capsys, model_dir: Path, tmp_path: Path, flags, field) -> None:
    if field == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["profile", "--model", str(model_dir), "--out", str(tmp_path / "x.nc"),
                 "--no-progress", *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and field in err
    assert not (tmp_path / "x.nc").exists()
