"""``text2sql predict``: a trained adapter on any JSONL file of questions, outside DVC."""

from __future__ import annotations

import json
import shutil

import pytest

from text2sql.ask.questions import rows_from_questions
from text2sql.cli import main
from text2sql.io import DataError, iter_jsonl, write_jsonl
from text2sql.params import PrepareParams

FIELDS = {"id", "db_id", "question", "raw", "sql", "seconds"}


def read(path):
    return [row for _, row in iter_jsonl(path)]


def test_predict_with_one_database_for_all(tmp_path, sample_dir, tiny_adapter, repo_root):
    questions = tmp_path / "questions.jsonl"
    write_jsonl(questions, [{"id": "q1", "question": "How many students are there?"},
                            {"question": "List the names of all students."}])
    out, metrics = tmp_path / "out" / "predictions.jsonl", tmp_path / "metrics.json"
    before = {p: p.stat().st_mtime_ns for p in (repo_root / "data").rglob("*") if p.is_file()}
    code = main(["predict", str(questions), "--db",
                 str(sample_dir / "database/school/school.sqlite"), "-o", str(out),
                 "--adapter", str(tiny_adapter), "--max-new-tokens", "16", "--batch-size", "2",
                 "--metrics", str(metrics), "--params", str(repo_root / "params.yaml")])
    assert code == 0
    preds = read(out)
    assert [p["id"] for p in preds] == ["q1", "line-2"]
    assert all(set(p) == FIELDS and p["db_id"] == "school" for p in preds)
    m = json.loads(metrics.read_text())
    assert m["n"] == 2 and m["sequences_per_s"] > 0
    after = {p: p.stat().st_mtime_ns for p in (repo_root / "data").rglob("*") if p.is_file()}
    assert after == before  # the pipeline's data is untouched


def test_predict_on_a_folder_of_spider_databases_with_voting(tmp_path, sample_dir, tiny_adapter):
    questions = tmp_path / "dev.jsonl"
    write_jsonl(questions, [{"id": "a", "db_id": "shop", "question": "How many products?"},
                            {"id": "b", "db_id": "library", "question": "List every book title."}])
    out = tmp_path / "predictions.jsonl"
    code = main(["predict", str(questions), "--db", str(sample_dir), "-o", str(out),
                 "--adapter", str(tiny_adapter), "--max-new-tokens", "16", "--num-samples", "2",
                 "--temperature", "1.0", "--params", str(tmp_path / "none.yaml")])
    assert code == 0
    preds = read(out)
    assert [(p["id"], p["db_id"]) for p in preds] == [("a", "shop"), ("b", "library")]
    assert all(len(p["candidates"]) == 2 for p in preds)


def test_questions_become_prompts_like_the_prepare_stages(sample_dir, prepared_rows, repo_root):
    """A dev question given by db_id over the sample folder gets the prepare stage's prompt."""
    from text2sql.params import load_params

    row = prepared_rows["eval"][0]
    numbered = rows_from_questions([(1, {"id": row["id"], "db_id": row["db_id"],
                                         "question": row["question"]})],
                                   "q.jsonl", sample_dir, load_params("prepare",
                                                                      repo_root / "params.yaml"))
    (lineno, built), = numbered
    assert lineno == 1
    assert built["prompt"] == row["prompt"] and built["tables"] == row["tables"]


@pytest.mark.parametrize(("line", "db", "message"), [
    ({"db_id": "school"}, "folder", "q.jsonl:3: missing field 'question'"),
    ({"question": "How many?"}, "folder", "q.jsonl:3: --db .* is a folder, so every question "
                                          "needs a db_id"),
    ({"question": "How many?", "db_id": "zoo"}, "folder", "q.jsonl:3: unknown db_id 'zoo': .*zoo.sqlite not found"),
    ({"question": "How many?", "db_id": 7}, "folder", "q.jsonl:3: field 'db_id' must be a string"),
    ({"question": "How many?", "db_id": "school"}, None, "q.jsonl:3: no database: give --db"),
])
def test_bad_questions_name_file_line_and_field(sample_dir, line, db, message):
    with pytest.raises(DataError, match=message):
        rows_from_questions([(3, line)], "q.jsonl", sample_dir if db else None, PrepareParams())


def test_bad_command_lines_are_errors(tmp_path, sample_dir, capsys):
    q = tmp_path / "q.jsonl"
    write_jsonl(q, [{"question": "How many?", "db_id": "school"}])
    assert main(["predict", str(q), "-o", str(q), "--db", str(sample_dir)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert main(["predict", str(q), "-o", str(tmp_path / "p.jsonl"), "--db",
                 str(tmp_path / "nowhere")]) == 2
    assert "no such SQLite file or folder (--db)" in capsys.readouterr().err
    assert main(["predict", str(q), "-o", str(tmp_path / "p.jsonl"), "--db", str(sample_dir),
                 "--num-samples", "0", "--params", str(tmp_path / "none.yaml")]) == 2
    assert "command-line options: infer.num_samples" in capsys.readouterr().err


def test_prepared_rows_run_as_they_are(tmp_path, prepared_rows, tiny_adapter):
    """The prepare stage's own output (with prompts) is accepted without --db."""
    f = tmp_path / "eval.jsonl"
    write_jsonl(f, prepared_rows["eval"][:2])
    out = tmp_path / "p.jsonl"
    shutil.copy(f, tmp_path / "copy.jsonl")
    assert main(["predict", str(f), "-o", str(out), "--adapter", str(tiny_adapter),
                 "--max-new-tokens", "8", "--params", str(tmp_path / "none.yaml")]) == 0
    assert [p["id"] for p in read(out)] == [r["id"] for r in prepared_rows["eval"][:2]]
    assert f.read_bytes() == (tmp_path / "copy.jsonl").read_bytes()
