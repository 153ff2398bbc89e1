"""The built-in sample dataset: deterministic, committed as generated, and well-formed."""

from __future__ import annotations

import json
import sqlite3

import pytest

from text2sql.data.sample import build_sample_dataset


def _dump(db) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "sample"
    build_sample_dataset(out)
    return out


def test_committed_sample_matches_a_fresh_build(sample_dir, rebuilt):
    for name in ("tables.json", "train_spider.json", "dev.json"):
        assert json.loads((sample_dir / name).read_text()) == json.loads((rebuilt / name).read_text()), name
    for db in sorted(rebuilt.glob("database/*/*.sqlite")):
        assert _dump(db) == _dump(sample_dir / db.relative_to(rebuilt)), db.name


def test_splits_are_disjoint_and_every_gold_query_runs(sample_dir):
    train = json.loads((sample_dir / "train_spider.json").read_text())
    dev = json.loads((sample_dir / "dev.json").read_text())
    assert len(train) >= 1500 and len(dev) >= 150
    assert not {e["question"] for e in train} & {e["question"] for e in dev}
    dbs = {e["db_id"] for e in train + dev}
    assert len(dbs) >= 4
    for e in train + dev:
        conn = sqlite3.connect(sample_dir / "database" / e["db_id"] / f"{e['db_id']}.sqlite")
        conn.execute(e["query"]).fetchall()
        conn.close()


def test_covers_the_sql_the_issue_asks_for(sample_dir):
    queries = [e["query"] for e in json.loads((sample_dir / "train_spider.json").read_text())]
    for feature in ("WHERE", "count(*)", "avg(", "sum(", "GROUP BY", "ORDER BY", "LIMIT", "JOIN"):
        assert any(feature in q for q in queries), feature


def test_seed_examples_are_answerable(sample_dir):
    examples = json.loads((sample_dir / "train_spider.json").read_text()) + \
        json.loads((sample_dir / "dev.json").read_text())
    questions = {e["question"] for e in examples}
    assert "Which students got an A?" in questions
    assert any(q.startswith("Who is the teacher of ") for q in questions)
    tables = {t for entry in json.loads((sample_dir / "tables.json").read_text())
              if entry["db_id"] == "school" for t in entry["table_names_original"]}
    assert {"students", "courses", "teachers", "enrollments", "grades"} <= tables
    conn = sqlite3.connect(sample_dir / "database/school/school.sqlite")
    got_a = conn.execute("SELECT DISTINCT T1.name FROM students AS T1 JOIN enrollments AS T2 "
                         "ON T1.student_id = T2.student_id WHERE T2.grade = 'A'").fetchall()
    assert got_a


# ------------------------------------------------------------ multi-turn sample (SParC layout)


@pytest.fixture(scope="module")
def rebuilt_conversations(tmp_path_factory):
    from text2sql.data.sample import build_conversation_dataset

    out = tmp_path_factory.mktemp("sample-sparc") / "sample-sparc"
    build_conversation_dataset(out)
    return out


def test_committed_conversations_match_a_fresh_build(repo_root, sample_dir, rebuilt_conversations):
    committed = repo_root / "data" / "sample-sparc"
    for name in ("tables.json", "train.json", "dev.json", "README.md"):
        assert (committed / name).read_text() == (rebuilt_conversations / name).read_text(), name
    assert json.loads((committed / "tables.json").read_text()) == \
        json.loads((sample_dir / "tables.json").read_text())
    for db in sorted(rebuilt_conversations.glob("database/*/*.sqlite")):
        rel = db.relative_to(rebuilt_conversations)
        assert _dump(db) == _dump(committed / rel) == _dump(sample_dir / rel), db.name


def test_conversations_have_2_to_4_turns_unseen_dev_texts_and_gold_that_runs(repo_root):
    root = repo_root / "data" / "sample-sparc"
    train = json.loads((root / "train.json").read_text())
    dev = json.loads((root / "dev.json").read_text())
    assert len(train) >= 200 and len(dev) >= 20
    assert {len(c["interaction"]) for c in train + dev} == {2, 3, 4}
    assert {c["database_id"] for c in dev} == {"school", "library", "shop", "clinic"}

    def text(c):
        return tuple(t["utterance"] for t in c["interaction"])

    assert not {text(c) for c in train} & {text(c) for c in dev}
    for c in train + dev:
        db = c["database_id"]
        conn = sqlite3.connect(root / "database" / db / f"{db}.sqlite")
        for t in c["interaction"]:
            conn.execute(t["query"]).fetchall()
        conn.close()
