"""Execution-guided self-consistency: voting by result set on a real SQLite file."""

from __future__ import annotations

import sqlite3

import pytest

from text2sql.inference.voting import Candidate, choose, vote
from text2sql.sql.sqlite import ExecResult, open_readonly


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "pets.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE pet (id INTEGER PRIMARY KEY, name TEXT, kind TEXT, age REAL);
        INSERT INTO pet VALUES (1, 'Rex', 'dog', 3), (2, 'Tom', 'cat', 5), (3, 'Kit', 'cat', 1);
    """)
    conn.commit()
    conn.close()
    conn = open_readonly(path)
    yield conn
    conn.close()


def c(sql: str, logprob: float) -> Candidate:
    return Candidate(raw=f"```sql\n{sql}\n```", sql=sql, logprob=logprob)


def test_majority_result_wins_over_a_more_likely_minority(db):
    cands = [c("SELECT name FROM pet WHERE kind = 'dog'", -0.1),  # most likely, alone
             c("SELECT name FROM pet WHERE kind = 'cat'", -2.0),
             c("SELECT name FROM pet WHERE kind='cat' ORDER BY id DESC", -1.5),  # same bag of rows
             c("SELECT nme FROM pet", -0.05)]  # fails: dropped
    v = choose(db, cands, timeout_s=2, max_rows=100)
    assert v.chosen == 2  # the winning group's most likely member
    assert (v.votes, v.valid, v.groups) == (2, 3, 2)
    assert v.errors == [None, None, None, "unknown_column"]


def test_tie_goes_to_the_group_with_the_most_likely_candidate(db):
    cands = [c("SELECT count(*) FROM pet", -3.0),
             c("SELECT count(*) FROM pet WHERE kind = 'cat'", -1.0),
             c("SELECT count(id) FROM pet", -2.5),
             c("SELECT count(*) FROM pet WHERE age > 2", -0.5)]
    v = choose(db, cands, timeout_s=2, max_rows=100)
    # Results: 3, 2, 3, 2 -> two groups of two; the "2" group holds the best (-0.5).
    assert (v.votes, v.groups) == (2, 2)
    assert v.chosen == 3


def test_equal_results_group_across_column_order_and_number_types(db):
    cands = [c("SELECT name, age FROM pet WHERE id = 1", -1.0),
             c("SELECT age, name FROM pet WHERE id = 1", -2.0),
             c("SELECT name, CAST(age AS INTEGER) FROM pet WHERE id = 1", -3.0),
             c("SELECT name, age + 1 FROM pet WHERE id = 1", -0.1)]
    v = choose(db, cands, timeout_s=2, max_rows=100)
    assert (v.votes, v.groups, v.chosen) == (3, 2, 0)


def test_empty_results_vote_only_when_no_candidate_returns_rows(db):
    cands = [c("SELECT name FROM pet WHERE kind = 'Dog'", -0.3),  # wrong value: no rows
             c("SELECT name FROM pet WHERE kind = 'DOG'", -0.4),  # no rows
             c("SELECT name FROM pet WHERE kind = 'dog'", -0.9)]
    v = choose(db, cands, timeout_s=2, max_rows=100)
    assert (v.chosen, v.votes, v.valid, v.groups) == (2, 1, 3, 1)
    plain = choose(db, cands, timeout_s=2, max_rows=100, prefer_nonempty=False)
    assert (plain.chosen, plain.votes, plain.groups) == (0, 2, 2)
    only_empty = choose(db, cands[:2], timeout_s=2, max_rows=100)
    assert (only_empty.chosen, only_empty.votes) == (0, 2)


def test_every_candidate_failing_falls_back_to_the_most_likely(db):
    cands = [c("SELECT nope FROM pet", -1.0), c("DELETE FROM pet", -0.2), c("", -0.1),
             c("SELECT * FROM missing", -5.0)]
    v = choose(db, cands, timeout_s=2, max_rows=100)
    assert (v.chosen, v.votes, v.valid) == (2, 0, 0)
    assert v.errors == ["unknown_column", "not_read_only", "empty_prediction", "unknown_table"]
    assert db.execute("SELECT count(*) FROM pet").fetchone() == (3,)  # nothing was deleted


def test_a_runaway_candidate_times_out_and_is_dropped(db):
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT count(*) FROM n")
    v = choose(db, [c(slow, -0.1), c("SELECT 1", -4.0)], timeout_s=0.3, max_rows=10)
    assert v.chosen == 1 and v.errors[0] == "timeout"


def test_a_candidate_that_would_hang_the_parser_is_dropped(db):
    loop = "SELECT name FROM pet " + "JOIN pet AS p " * 40
    v = choose(db, [c(loop, -0.1), c("SELECT 1", -3.0)], timeout_s=2, max_rows=10)
    assert v.chosen == 1 and v.errors == ["parse_error", None]


def test_vote_checks_its_inputs():
    with pytest.raises(ValueError, match="at least one"):
        vote([], [])
    with pytest.raises(ValueError, match="1 candidates but 0 results"):
        vote([c("SELECT 1", 0.0)], [])
    assert vote([c("SELECT 1", 0.0)], [ExecResult([(1,)])]).votes == 1
