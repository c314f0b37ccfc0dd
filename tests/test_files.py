import pytest

from llmpq.errors import UserError
from llmpq.files import load_yaml_mapping, write_json_atomic, write_text_atomic


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "hello")
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_yaml_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_yaml_mapping(tmp_path / "missing.yaml", "cluster")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(UserError, match=r"line \d+") as err:
        load_yaml_mapping(bad, "cluster")
    assert "\n" not in str(err.value)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_yaml_mapping(scalar, "cluster")
