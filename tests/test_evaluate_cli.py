"""``text2sql evaluate`` on Spider- and BIRD-layout folders, and the evaluate stage script."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from text2sql.cli import main as cli


@pytest.fixture(scope="module")
def dev(sample_dir) -> list[dict]:
    return json.loads((sample_dir / "dev.json").read_text())[:24]


@pytest.fixture()
def spider(tmp_path, sample_dir, dev) -> Path:
    """A Spider-layout folder: the sample's tables and databases, a 24-example dev split."""
    root = tmp_path / "spider"
    root.mkdir()
    (root / "tables.json").write_text((sample_dir / "tables.json").read_text())
    (root / "database").symlink_to(sample_dir / "database")
    (root / "dev.json").write_text(json.dumps(dev))
    return root


def _run(*args: str) -> int:
    return cli(["evaluate", *map(str, args), "--no-progress", "--workers", "2"])


def _metrics(out: Path) -> dict:
    """The headline metrics and the breakdown, together."""
    return {**json.loads((out / "metrics.json").read_text()),
            **json.loads((out / "breakdown.json").read_text())}


def test_text_file_with_db_ids(spider, dev, tmp_path, capsys):
    preds = tmp_path / "preds.sql"
    lines = [f"{row['query']}\t{row['db_id']}" for row in dev]
    lines[0] = f"SELECT 1\t{dev[0]['db_id']}"  # one wrong answer
    lines[1] = ""  # one empty prediction
    preds.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert _run(preds, "--dataset", spider, "--split", "dev", "--out", out) == 0
    m = _metrics(out)
    assert m["n"] == 24 and m["outcome_correct"] == 22
    assert m["outcome_wrong_result"] == 1 and m["outcome_empty_prediction"] == 1
    assert m["execution_accuracy"] == round(22 / 24, 4)
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [f"dev-{k:05d}" for k in range(24)]
    assert (out / "by_difficulty.csv").read_text().startswith("difficulty,n,execution_accuracy")
    report = (out / "report.md").read_text()
    assert "| execution accuracy | **91.7%** |" in report
    assert "execution accuracy" in capsys.readouterr().out


def test_jsonl_by_id_index_and_question(spider, dev, tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = [{"id": "dev-00000", "sql": dev[0]["query"]},
            {"id": 1, "sql": dev[1]["query"]},
            {"question": dev[2]["question"], "db_id": dev[2]["db_id"], "sql": dev[2]["query"]},
            {"question": dev[3]["question"], "sql": "SELECT 42"}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert _run(preds, "--dataset", spider, "--out", out) == 0
    m = _metrics(out)
    assert m["outcome_correct"] == 3 and m["outcome_wrong_result"] == 1
    assert m["outcome_empty_prediction"] == 20  # examples without a prediction


@pytest.mark.parametrize("content,message", [
    ("SELECT 1\tno_such_db\n", "db_id 'no_such_db' but example dev-00000"),
    ("SELECT 1\n", "1 lines but split has 24 examples"),
    ('{"id": "dev-99999", "sql": "SELECT 1"}\n', "id 'dev-99999' is not an example"),
    ('{"id": 0, "sql": "SELECT 1"}\n{"id": "dev-00000", "sql": "SELECT 2"}\n',
     "a second prediction for example dev-00000 (the first is on line 1)"),
    ('{"question": "no such question?", "sql": "SELECT 1"}\n', "is not in this split"),
    ('{"id": 0}\n', "missing or non-text field 'sql'"),
])
def test_bad_predictions_name_the_line(spider, tmp_path, capsys, content, message):
    preds = tmp_path / ("p.jsonl" if content.startswith("{") else "p.sql")
    preds.write_text(content)
    assert _run(preds, "--dataset", spider, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and str(preds) in err
    assert not (tmp_path / "out").exists()


def test_refuses_pipeline_outputs_and_missing_split(spider, tmp_path, capsys, monkeypatch):
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT 1\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(repo)
    assert _run(preds, "--dataset", spider, "--out", "metrics/x") == 2
    assert "which the DVC pipeline owns" in capsys.readouterr().err
    assert _run(preds, "--dataset", spider, "--split", "test", "--out", tmp_path / "o") == 2
    assert "no file for split 'test'" in capsys.readouterr().err


def test_bird_layout(tmp_path):
    root = tmp_path / "bird"
    db_dir = root / "dev_databases" / "toy"
    db_dir.mkdir(parents=True)
    conn = sqlite3.connect(db_dir / "toy.sqlite")
    conn.executescript("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2);")
    conn.close()
    (root / "dev.json").write_text(json.dumps([
        {"question": "How many?", "SQL": "SELECT count(*) FROM t", "db_id": "toy",
         "evidence": ""},
        {"question": "Largest?", "SQL": "SELECT max(a) FROM t", "db_id": "toy", "evidence": ""}]))
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT count(a) FROM t\nSELECT min(a) FROM t\n")
    out = tmp_path / "out"
    assert _run(preds, "--dataset", root, "--layout", "bird", "--out", out) == 0
    m = _metrics(out)
    assert m["outcome_correct"] == 1 and m["outcome_wrong_result"] == 1


def test_stage_script(tmp_path, repo_root, sample_dir, dev):
    """stages/evaluate.py in a scratch folder: prepared rows + predictions in, 4 outputs out."""
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "predictions").mkdir(parents=True)
    prepared, predictions = [], []
    for k, row in enumerate(dev[:6]):
        db = sample_dir / "database" / row["db_id"] / f"{row['db_id']}.sqlite"
        prepared.append({"id": f"e{k}", "db_id": row["db_id"], "db_path": str(db),
                         "question": row["question"], "query": row["query"]})
        predictions.append({"id": f"e{k}", "db_id": row["db_id"], "question": row["question"],
                            "raw": "", "sql": row["query"] if k else "SELECT", "seconds": 0.1})
    for name, rows in (("prepared", prepared), ("predictions", predictions)):
        (tmp_path / "data" / name / "eval.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "params.yaml").write_text(
        "evaluate:\n  timeout_s: 2.0\n  max_rows: 1000\n  workers: 1\n  keep_distinct: false\n"
        "  report_examples: 2\n")
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert m == {"execution_accuracy": 0.8333, "exact_set_match": 0.8333,
                 "normalized_match": 0.8333, "valid_sql_rate": 0.8333, "n": 6, "gold_errors": 0}
    b = json.loads((tmp_path / "metrics" / "eval_breakdown.json").read_text())
    assert b["outcome_correct"] == 5 and b["outcome_parse_error"] == 1
    assert all("seconds" not in json.loads(line) for line in
               (tmp_path / "data" / "evaluation" / "results.jsonl").read_text().splitlines())
    assert (tmp_path / "data" / "evaluation" / "results.jsonl").read_text().count("\n") == 6
    assert (tmp_path / "metrics" / "eval_by_difficulty.csv").is_file()
    assert "parse_error" in (tmp_path / "metrics" / "eval_report.md").read_text()

    (tmp_path / "params.yaml").write_text("evaluate:\n  timeout: 2.0\n")
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown key 'evaluate.timeout'" in proc.stderr


def _trimmed(spider: Path, sample_dir: Path, gone: str) -> None:
    """The Spider folder with every database but ``gone`` (a trimmed release)."""
    (spider / "database").unlink()
    (spider / "database").mkdir()
    for db in (sample_dir / "database").iterdir():
        if db.name != gone:
            (spider / "database" / db.name).symlink_to(db)


def test_missing_database_stops_unless_skipping_is_asked(spider, sample_dir, dev, tmp_path,
                                                         capsys):
    _trimmed(spider, sample_dir, "shop")
    preds = tmp_path / "preds.sql"
    preds.write_text("".join(f"{row['query']}\t{row['db_id']}\n" for row in dev))
    out = tmp_path / "out"
    assert _run(preds, "--dataset", spider, "--split", "dev", "--out", out) == 2
    assert "db_id 'shop': SQLite file" in capsys.readouterr().err and not out.exists()
    jsonl = tmp_path / "preds.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"dev-{k:05d}", "sql": row["query"]}) + "\n"
                             for k, row in enumerate(dev)))
    shop = [f"dev-{k:05d}" for k, row in enumerate(dev) if row["db_id"] == "shop"]
    for f in (preds, jsonl):  # by line and by id: the other examples keep their predictions
        assert _run(f, "--dataset", spider, "--split", "dev", "--out", out,
                    "--skip-missing-databases") == 0
        assert "2 examples left out: no SQLite file for shop" in capsys.readouterr().err
        m = _metrics(out)
        assert m["skipped_missing_database"] == 2 and m["n"] == 22 and m["outcome_correct"] == 22
        report = (out / "report.md").read_text()
        assert f"Left out, no SQLite file: 2 examples on 1 databases: shop (2: {', '.join(shop)})" \
            in report
        ids = {json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()}
        assert not ids & set(shop) and len(ids) == 22


def test_bench_linking_can_skip_missing_databases(spider, sample_dir, capsys):
    import importlib.util

    _trimmed(spider, sample_dir, "shop")
    spec = importlib.util.spec_from_file_location("bench_linking",
                                                  sample_dir.parents[1] / "bench/bench_linking.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main([str(spider), "--split", "dev"]) == 2
    assert "db_id 'shop': SQLite file" in capsys.readouterr().err
    assert bench.main([str(spider), "--split", "dev", "--skip-missing-databases"]) == 0
    out = capsys.readouterr().out
    assert "22 examples" in out and "2 left out (no SQLite file): shop (2)" in out
