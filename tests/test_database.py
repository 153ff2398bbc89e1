"""The :class:`text2sql.ask.database.Database` contract: a SQLite file, a live PostgreSQL
database (skipped without PostgreSQL's binaries) and a DuckDB file pass the same tests on the sample school
database (conftest's ``database``), so ``ask``, ``chat`` and ``serve`` need no engine checks."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import SCHOOL
from text2sql.ask.database import Database, SqliteDatabase, open_database
from text2sql.ask.postgres import PostgresDatabase
from text2sql.inference.voting import Candidate
from text2sql.io import DataError

RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def test_it_is_a_database_named_for_its_data(database):
    assert isinstance(database, Database)
    assert database.name == "school" and database.engine in ("sqlite", "postgresql", "duckdb")
    assert database.dialect == {"sqlite": None, "postgresql": "postgres",
                                "duckdb": "duckdb"}[database.engine]
    assert "s3cret" not in str(database) + repr(database)  # the reader's password, masked


def test_the_schema_is_the_files(database):
    file = sqlite3.connect(SCHOOL)
    tables = sorted(r[0] for r in file.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'"))
    schema = database.schema()
    assert sorted(schema.table_names) == tables and schema.db_id == "school"
    assert database.schema("renamed").db_id == "renamed"
    assert {(f.table, f.column, f.ref_table) for f in schema.foreign_keys} >= {
        ("enrollments", "student_id", "students")}
    assert database.why_no_tables()


def test_run_answers_within_its_limits(database):
    assert database.run("SELECT count(*) FROM students").rows == [(40,)]
    capped = database.run("SELECT * FROM enrollments", max_rows=3)
    assert capped.ok and capped.truncated and len(capped.rows) == 3
    assert database.run("SELECT * FROM enrollments", max_bytes=100).error == "too_large"
    slow = database.run(RUNAWAY, timeout_s=0.5)
    assert slow.error == "timeout" and slow.seconds < 3


@pytest.mark.parametrize(("sql", "kind"), [
    ("DELETE FROM students", "not_read_only"),
    ("SELECT 1; DROP TABLE grades", "not_read_only"),
    ("SELECT * FROM nope", "unknown_table"),
    ("SELECT nme FROM students", "unknown_column"),
    ("", "empty_prediction"),
])
def test_run_refuses_and_fails_by_kind(database, sql, kind):
    result = database.run(sql, timeout_s=2)
    assert result.error == kind and result.rows is None, result


def test_shown_is_the_sql_that_runs_there(database):
    sql = "SELECT name FROM students WHERE year = 4 ORDER BY name"
    shown = database.shown(sql)
    assert shown == sql if database.dialect is None else shown.startswith("SELECT name FROM")


def test_vote_picks_what_most_candidates_agree_on(database):
    candidates = [Candidate("a", "SELECT count(*) FROM students", -3.0),
                  Candidate("b", "SELECT 1", -0.1),
                  Candidate("c", "SELECT count(student_id) FROM students", -2.0),
                  Candidate("d", "DELETE FROM students", -0.5)]
    vote = database.vote(candidates, timeout_s=2, max_rows=10)
    assert candidates[vote.chosen].sql in (candidates[0].sql, candidates[2].sql)
    assert (vote.votes, vote.valid) == (2, 3)


def test_values_and_rows_for_prompts(database):
    matches = database.value_index().match("Which courses did Wren Falk take?")
    assert ("students", "name", "Wren Falk") in {(m.table, m.column, m.value) for m in matches}
    rows = database.sample_rows("students", 2)
    assert len(rows) == 2 and all(len(r) == len(database.schema().table("students").columns)
                                  for r in rows)


def test_open_database_chooses_by_location(tmp_path):
    assert isinstance(open_database(SCHOOL), SqliteDatabase)
    assert open_database(SCHOOL, name="other").name == "other"
    assert isinstance(open_database("postgresql://reader@db.example/shop"), PostgresDatabase)
    with pytest.raises(DataError, match="missing.sqlite: SQLite file not found \\(--db\\); a "
                                        "PostgreSQL database is given as postgresql://"):
        open_database(tmp_path / "missing.sqlite")
