"""The answer pipeline of ``ask``, ``chat`` and ``serve`` (:mod:`text2sql.ask.pipeline`) on the
sample databases, with a generator that writes what the test tells it to (the model's part is
tested with the real model in test_ask, test_chat and test_serve)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import pytest

from tests.conftest import SAMPLE, SCHOOL
from text2sql.ask.database import open_database
from text2sql.ask.pipeline import (
    Limits,
    Tally,
    answer_generation,
    answer_question,
    run_sql,
)
from text2sql.data.sources import Turn
from text2sql.params import PrepareParams

SHOP = SAMPLE / "database" / "shop" / "shop.sqlite"


@dataclass
class Written:
    texts: list[str]
    logprobs: list[float] = field(default_factory=list)


class Writer:
    """A generator that answers every prompt with ``texts`` and remembers what it was asked."""

    def __init__(self, *texts: str, logprobs: list[float] | None = None):
        self.texts, self.logprobs = list(texts), logprobs or [-1.0] * len(texts)
        self.asked: list[tuple[list[dict[str, str]], int]] = []

    def __call__(self, prompts: list[list[dict[str, str]]], num_samples: int) -> list[Written]:
        self.asked += [(prompt, num_samples) for prompt in prompts]
        return [Written(self.texts[:num_samples], self.logprobs[:num_samples])
                for _ in prompts]


def rows_of(sql: str, db=SCHOOL) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_a_question_is_prompted_generated_extracted_and_run(database):
    writer = Writer("```sql\nSELECT name FROM students WHERE year = 4 ORDER BY name\n```")
    answer = answer_question("Which students are in year 4?", database, database.schema(),
                             writer, settings=PrepareParams(), dialects=[database.dialect])
    [(prompt, n)] = writer.asked
    assert n == 1 and prompt[-1]["content"].endswith("Which students are in year 4?")
    assert answer.source == "model" and "students" in answer.tables
    assert answer.sql == "SELECT name FROM students WHERE year = 4 ORDER BY name"
    assert answer.ok and answer.executed and not answer.refused and answer.vote is None
    assert answer.columns == ["name"] and answer.rows == rows_of(answer.sql)
    assert answer.generate_s is not None and answer.execute_s is not None
    assert list(answer.translations) == ([database.dialect] if database.dialect else [])


def test_several_samples_are_voted_on_by_result(database):
    writer = Writer("SELECT count(*) FROM students", "SELECT 1",
                    "SELECT count(student_id) FROM students", logprobs=[-3.0, -0.1, -2.0])
    answer = answer_question("How many students are there?", database, database.schema(),
                             writer, settings=PrepareParams(), num_samples=3)
    assert writer.asked[0][1] == 3
    assert answer.vote == Tally(samples=3, votes=2, valid=3)
    assert answer.sql in ("SELECT count(*) FROM students", "SELECT count(student_id) FROM students")
    assert answer.rows == [(40,)]


def test_the_conversation_so_far_is_in_the_prompt():
    db = open_database(SCHOOL)
    writer = Writer("SELECT count(*) FROM students WHERE year = 2")
    history = [Turn("Which students are in year 2?", "SELECT name FROM students WHERE year = 2")]
    answer = answer_question("How many is that?", db, db.schema(), writer,
                             settings=PrepareParams(), history=history)
    prompt = writer.asked[0][0]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert prompt[2]["content"] == history[0].query
    assert answer.rows == rows_of("SELECT count(*) FROM students WHERE year = 2")


@pytest.mark.parametrize(("written", "guard", "kind"), [
    ("I cannot answer that.", "read_only", "empty_prediction"),
    ("DELETE FROM students", "read_only", "not_read_only"),
    ("SELECT name FROM students " + "JOIN courses " * 40, "bare_joins", "parse_error"),
])
def test_what_the_model_writes_is_guarded_before_it_runs(written, guard, kind):
    db = open_database(SCHOOL)
    answer = answer_question("Remove every student", db, db.schema(), Writer(written),
                             settings=PrepareParams(), dialects=["postgres"])
    assert (answer.guard, answer.error_kind) == (guard, kind), answer
    assert answer.refused and not answer.executed and answer.result is None
    assert answer.rows == [] and answer.columns == []
    assert bool(answer.translations) == (guard == "read_only" and bool(answer.sql))


def test_given_sql_takes_the_same_road():
    db = open_database(SHOP)
    schema = db.schema()
    sql = "SELECT name FROM customers ORDER BY name LIMIT 2"
    answer = run_sql(db, schema, sql, dialects=[None, "postgres"])
    assert answer.source == "given" and answer.tables is None
    assert answer.rows == rows_of(sql, SHOP) and answer.columns == ["name"]
    assert answer.translations["postgres"].startswith("SELECT name FROM customers ORDER BY name")
    unrun = run_sql(db, schema, sql, execute=False)
    assert unrun.ok and unrun.result is None and not unrun.executed
    failed = run_sql(db, schema, "SELECT nope FROM customers")
    assert failed.error_kind == "unknown_column" and failed.executed and not failed.refused
    behind = run_sql(db, schema, "SELECT * FROM pragma_table_info('customers')")
    assert (behind.guard, behind.error_kind) == ("database", "not_read_only")
    assert behind.result is not None and not behind.executed


def test_limits_hold_for_model_answers():
    db = open_database(SCHOOL)
    row = {"tables": ["students"]}
    capped = answer_generation(db, db.schema(), row, Written(["SELECT * FROM students"]),
                               limits=Limits(max_rows=3))
    assert capped.truncated and len(capped.rows) == 3
    slow = answer_generation(db, db.schema(), row, Written([
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"]),
        limits=Limits(timeout_s=0.3))
    assert slow.error_kind == "timeout" and slow.executed and not slow.refused
