"""Atomic outputs and line-numbered JSONL errors."""

from __future__ import annotations

import pytest

from text2sql.io import DataError, atomic_path, iter_jsonl, read_json, write_json, write_jsonl


def test_failed_write_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})

    def rows():
        yield {"x": 1}
        raise RuntimeError("stage crashed midway")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_failed_directory_write_keeps_the_old_directory(tmp_path):
    out = tmp_path / "prepared"
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "train.jsonl").write_text("old\n")
    with pytest.raises(ValueError), atomic_path(out, is_dir=True) as tmp:
        (tmp / "train.jsonl").write_text("new, half written")
        raise ValueError("boom")
    assert (out / "train.jsonl").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "eval.jsonl").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl"]


def test_outputs_get_ordinary_permissions(tmp_path):
    write_json(tmp_path / "m.json", {})
    assert (tmp_path / "m.json").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize("content, message", [
    (b'{"a": 1}\n{"a": \n', "x.jsonl:2: invalid JSON"),
    (b'{"a": 1}\n\n[1, 2]\n', "x.jsonl:3: expected a JSON object, got list"),
    (b'{"a": 1}\n{"q": "caf\xe9"}\n', "x.jsonl:2: not valid UTF-8"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(iter_jsonl(path))


def test_json_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "tables.json"
    path.write_text('[\n  {"db_id": "x",}\n]')
    with pytest.raises(DataError, match=r"tables.json:2:\d+: invalid JSON"):
        read_json(path)
    with pytest.raises(DataError, match="file not found"):
        read_json(tmp_path / "missing.json")
