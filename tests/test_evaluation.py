"""Scoring end to end on a real SQLite file: every outcome kind, gold errors, metrics, report."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from text2sql.evaluation import scoring as ev
from text2sql.evaluation.scoring import EvalConfig, EvalItem, score_items, summarize
from text2sql.sql import sqlite as ex


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("club") / "club.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city TEXT);
        INSERT INTO member VALUES (1, 'Ann', 30, 'Oslo'), (2, 'Bob', 25, 'Rome'),
                                  (3, 'Cy', 25, 'Oslo'), (4, 'Di', 41, NULL);
        CREATE TABLE big (n INTEGER);
    """)
    conn.executemany("INSERT INTO big VALUES (?)", [(i,) for i in range(3000)])
    conn.commit()
    conn.close()
    return path


GOLD = "SELECT name FROM member WHERE city = 'Oslo'"
# (predicted SQL, expected outcome, valid SQL, normalized match)
CASES = [
    ("SELECT name FROM member WHERE city = 'Oslo'", ev.CORRECT, True, True),
    ("select T1.name from member as T1 where T1.city = \"Oslo\"", ev.CORRECT, True, True),
    ("SELECT name FROM member WHERE age < 35 AND city IS NOT NULL AND id <> 2", ev.CORRECT, True,
     False),
    ("SELECT name FROM member", ev.WRONG_RESULT, True, False),
    ("", ex.EMPTY, False, False),
    ("SELECT name FROM member WHERE", ex.PARSE_ERROR, False, False),
    ("SELECT name FROM members", ex.UNKNOWN_TABLE, False, False),
    ("SELECT nam FROM member", ex.UNKNOWN_COLUMN, False, False),
    ("SELECT upper_case(name) FROM member", ex.EXEC_ERROR, False, False),
    ("SELECT count(*) FROM big a, big b, big c", ex.TIMEOUT, False, False),
    ("DROP TABLE member", ex.NOT_READ_ONLY, False, False),
]


@pytest.fixture(scope="module")
def scored(db) -> list[ev.Scored]:
    items = [EvalItem(f"ex{k}", "club", str(db), "Who lives in Oslo?", GOLD, pred)
             for k, (pred, *_rest) in enumerate(CASES)]
    items += [
        EvalItem("gold-fails", "club", str(db), "q", "SELECT name FROM nowhere", GOLD),
        EvalItem("no-db", "club", str(db.parent / "missing.sqlite"), "q", GOLD, GOLD),
        EvalItem("gold-too-big", "club", str(db), "q", "SELECT n FROM big", "SELECT n FROM big"),
        EvalItem("pred-too-big", "club", str(db), "q", "SELECT n FROM big WHERE n < 5",
                 "SELECT n FROM big"),
        EvalItem("ordered", "club", str(db), "q", "SELECT name FROM member ORDER BY age, id",
                 "SELECT name FROM member ORDER BY age DESC"),
    ]
    return score_items(items, EvalConfig(timeout_s=0.3, max_rows=2000, workers=2,
                                         progress=False))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_outcome_per_example(scored, k):
    pred, outcome, valid, em = CASES[k]
    r = scored[k]
    assert (r.outcome, r.valid_sql, r.normalized_match) == (outcome, valid, em), r.message
    assert r.id == f"ex{k}" and r.difficulty == "easy" and r.gold_rows == 2
    if outcome not in (ev.CORRECT, ev.WRONG_RESULT):
        assert r.message


def test_data_errors_and_limits(scored):
    by_id = {r.id: r for r in scored}
    assert by_id["gold-fails"].outcome == ev.GOLD_ERROR
    assert "no such table: nowhere" in by_id["gold-fails"].message
    assert by_id["no-db"].outcome == ev.GOLD_ERROR and "not found" in by_id["no-db"].message
    assert by_id["gold-too-big"].outcome == ev.GOLD_ERROR
    assert "evaluate.max_rows" in by_id["gold-too-big"].message
    assert by_id["pred-too-big"].outcome == ev.WRONG_RESULT
    assert by_id["ordered"].outcome == ev.WRONG_RESULT


def test_summary_is_flat_and_excludes_gold_errors(scored):
    m = summarize(scored)
    assert all(isinstance(v, (int, float)) for v in m.values())
    assert m["n"] == len(CASES) + 2 and m["gold_errors"] == 3
    assert m["outcome_correct"] == 3
    assert m["execution_accuracy"] == round(3 / m["n"], 4)
    assert m["normalized_match"] == round(2 / m["n"], 4)
    assert m["valid_sql_rate"] == round(6 / m["n"], 4)
    for level in ("easy", "medium", "hard", "extra"):
        assert f"execution_accuracy_{level}" in m and f"n_{level}" in m
    assert sum(m[f"n_{level}"] for level in ("easy", "medium", "hard", "extra")) == m["n"]
    for kind in ev.OUTCOMES:
        assert f"outcome_{kind}" in m
    assert sum(m[f"outcome_{kind}"] for kind in ev.OUTCOMES) == m["n"]


def test_report_and_plot_rows(scored):
    m = summarize(scored)
    report = ev.render_report(scored, m, title="T", settings="S", examples=1)
    assert report.startswith("### T") and "| execution accuracy |" in report
    assert "| easy |" in report and "| timeout | 1 |" in report
    assert "Gold errors:" in report and "gold-fails" in report
    rows = ev.difficulty_rows(m)
    assert rows[-1]["difficulty"] == "all" and rows[-1]["n"] == m["n"]


def test_gold_runs_once_per_database_and_query(db):
    items = [EvalItem(str(k), "club", str(db), "q", GOLD if k % 2 else GOLD + " ", "x")
             for k in range(10)]
    assert ev.unique_gold_queries(items) == [(str(db), GOLD + " "), (str(db), GOLD)]


def _crash_on_marker(task):
    item = task[0]
    if "CRASH" in item.pred:
        os._exit(11)
    return _real_run_prediction(task)


_real_run_prediction = ev._run_prediction


def test_a_crashing_query_costs_one_example(db, monkeypatch):
    # No SQL crashes SQLite on purpose, so the worker function is swapped for one that
    # dies on a marker (the forked workers inherit the swap).
    monkeypatch.setattr(ev, "_run_prediction", _crash_on_marker)
    items = [EvalItem(str(k), "club", str(db), "q", GOLD, "SELECT 1 -- CRASH" if k == 2 else GOLD)
             for k in range(6)]
    results = score_items(items, EvalConfig(workers=2, progress=False))
    assert [r.outcome for r in results] == [ev.CORRECT] * 2 + [ex.EXEC_ERROR] + [ev.CORRECT] * 3
    assert "worker process died" in results[2].message


def test_keep_distinct(db):
    items = [EvalItem("d", "club", str(db), "q", "SELECT DISTINCT age FROM member",
                      "SELECT age FROM member")]
    assert score_items(items, EvalConfig(workers=1, progress=False))[0].outcome == ev.CORRECT
    kept = score_items(items, EvalConfig(workers=1, keep_distinct=True, progress=False))
    assert kept[0].outcome == ev.WRONG_RESULT


def test_score_prepared_rows(db):
    rows = [{"id": "a", "db_id": "club", "db_path": str(db), "question": "q", "query": GOLD},
            {"id": "b", "db_id": "club", "db_path": None, "question": "q", "query": GOLD}]
    results = ev.score(rows, {"a": GOLD}, workers=1)
    assert [r.outcome for r in results] == [ev.CORRECT, ev.GOLD_ERROR]


def test_a_prediction_that_is_the_gold_text_scores_as_if_it_ran(db):
    """Its result is the gold result (not run again), unless the query is volatile."""
    golds = [GOLD, "SELECT name FROM member ORDER BY age DESC LIMIT 2", "SELECT name FROM nowhere",
             "SELECT n FROM big WHERE n < 3 ORDER BY random()", "SELECT random()"]
    items = []
    for k, gold in enumerate(golds):
        items.append(EvalItem(f"{k}-same", "club", str(db), "q", gold, gold))
        items.append(EvalItem(f"{k}-ran", "club", str(db), "q", gold, gold + " "))  # not the text
    results = score_items(items, EvalConfig(timeout_s=2.0, workers=2, progress=False))
    fields = lambda r: (r.outcome, r.normalized_match, r.valid_sql, r.message, r.pred_rows)  # noqa: E731
    for same, ran in zip(results[::2], results[1::2], strict=True):
        if "random" not in same.gold:
            assert fields(same) == fields(ran), same.gold
    assert results[0].outcome == ev.CORRECT and results[4].outcome == ev.GOLD_ERROR
    assert not ev.runs_as_gold(items[8]) and results[8].outcome == ev.WRONG_RESULT  # ran again
