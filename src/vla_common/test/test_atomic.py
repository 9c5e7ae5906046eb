"""The one atomic write: all of the new content or all of the old, never a partial file or a stray temp."""

import json

import pytest
from vla_common.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

from vla_common import atomic


def test_writes_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "file.txt"
    assert write_text_atomic(target, "first") == target
    assert target.read_text() == "first"
    write_bytes_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_json_has_indent_and_a_trailing_newline(tmp_path):
    target = write_json_atomic(tmp_path / "x.json", {"a": [1, 2]}, indent=4)
    assert target.read_text() == json.dumps({"a": [1, 2]}, indent=4) + "\n"
    assert json.loads(write_json_atomic(tmp_path / "y.json", {"p": tmp_path}, default=str).read_text()) == {
        "p": str(tmp_path)
    }


def test_an_error_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "file.json"
    write_json_atomic(target, {"old": True})

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_json_atomic(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_an_unserializable_value_writes_nothing(tmp_path):
    target = tmp_path / "file.json"
    with pytest.raises(TypeError):
        write_json_atomic(target, {"x": object()})
    assert list(tmp_path.iterdir()) == []
