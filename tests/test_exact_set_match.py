"""Spider's exact set match on sqlglot, against the official evaluator's recorded verdicts on
Spider's training data (tests/fixtures/README.md says how they were made), and against the
official evaluator itself when TEST_SUITE_SQL_EVAL names a checkout of it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SPIDER_TRAIN
from text2sql.evaluation.exact_set_match import exact_set_match, read_schema

FIXTURE = REPO / "tests" / "fixtures" / "exact_set_match_spider_train.jsonl"
needs_spider = pytest.mark.skipif(not (SPIDER_TRAIN / "database").is_dir(),
                                  reason=f"{SPIDER_TRAIN}: Spider's training split not here")


def recorded() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def db(db_id: str) -> str:
    return str(SPIDER_TRAIN / "database" / db_id / f"{db_id}.sqlite")


@needs_spider
def test_agrees_with_the_official_verdicts_on_spider_train():
    rows = recorded()
    assert len(rows) == 506 and {r["official"] for r in rows} == {0, 1, "gold_unparsable"}
    wrong = []
    for r in rows:
        ours = exact_set_match(r["gold"], r["pred"], read_schema(db(r["db_id"])))
        expected = None if r["official"] == "gold_unparsable" else bool(r["official"])
        if ours is not expected:
            wrong.append((r["kind"], r["official"], r["gold"], r["pred"]))
    assert not wrong, wrong[:5]


@needs_spider
@pytest.mark.skipif(not os.environ.get("TEST_SUITE_SQL_EVAL"),
                    reason="set TEST_SUITE_SQL_EVAL to a checkout of taoyds/test-suite-sql-eval "
                           "(and TEST_SUITE_SQL_EVAL_PYTHON to a Python with nltk)")
def test_the_official_evaluator_still_gives_the_recorded_verdicts(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "official"}) + "\n"
                             for r in recorded()))
    python = os.environ.get("TEST_SUITE_SQL_EVAL_PYTHON", "python3")
    subprocess.run([python, str(REPO / "tests" / "official_exact_set_match.py"),
                    os.environ["TEST_SUITE_SQL_EVAL"], str(SPIDER_TRAIN), str(pairs),
                    str(tmp_path / "out.jsonl")], check=True, timeout=300)
    got = [json.loads(line)["official"]
           for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert got == [r["official"] for r in recorded()]


@pytest.fixture(scope="module")
def school(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("esm") / "school.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE teacher (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);
        CREATE TABLE course (id INTEGER PRIMARY KEY, title TEXT, teacher_id INTEGER,
                             FOREIGN KEY (teacher_id) REFERENCES teacher(id));
    """)
    conn.close()
    return path


GOLD = ("SELECT T1.name, count(*) FROM teacher AS T1 JOIN course AS T2 ON T1.id = T2.teacher_id "
        "WHERE T1.age > 30 AND T2.title = 'Math' GROUP BY T1.id ORDER BY count(*) DESC LIMIT 1")


@pytest.mark.parametrize("pred, match", [
    (GOLD, True),
    # Values, aliases, case, the order of SELECT items and of AND operands do not count.
    ("select count(*), a.name from teacher as a join course as b on a.id = b.teacher_id "
     "where b.title = 'Art' and a.age > 99 group by a.id order by count(*) desc limit 5", True),
    # A foreign key and the key it references are one column.
    (GOLD.replace("GROUP BY T1.id", "GROUP BY T2.teacher_id"), True),
    (GOLD.replace("SELECT T1.name", "SELECT DISTINCT T1.name"), True),  # DISTINCT ignored
    (GOLD.replace("T1.age > 30", "T1.age >= 30"), False),  # the operator counts
    (GOLD.replace("AND", "OR"), False),
    (GOLD.replace(" DESC", ""), False),  # the ORDER BY direction counts
    (GOLD.replace(" LIMIT 1", ""), False),  # LIMIT's presence counts
    (GOLD.replace("count(*)", "max(T1.age)", 1), False),
    (GOLD.replace("T1.age > 30 AND ", ""), False),
    (GOLD.replace("!=", "<>").replace("T1.age > 30", "T1.age <> 30"), False),  # outside the grammar
    ("SELECT", False),
])
def test_components_that_count_and_those_that_do_not(school, pred, match):
    assert exact_set_match(GOLD, pred, read_schema(str(school))) is match


def test_a_gold_query_outside_the_official_grammar_has_no_verdict(school):
    schema = read_schema(str(school))
    assert exact_set_match("SELECT name FROM teacher WHERE age IN (1, 2)", "SELECT name FROM teacher",
                           schema) is None
