"""SQL extraction from what models really write (one row per habit seen in the wild)."""

from __future__ import annotations

import pytest

from text2sql.sql.extract import extract_sql

CASES = [
    # (what the model wrote, the SQL we must get back)
    ("SELECT name FROM students", "SELECT name FROM students"),
    ("SELECT name FROM students;", "SELECT name FROM students"),
    ("  SELECT name FROM students ;  \n", "SELECT name FROM students"),
    ("```sql\nSELECT name FROM students WHERE grade = 'A';\n```",
     "SELECT name FROM students WHERE grade = 'A'"),
    ("```\nSELECT count(*) FROM books\n```", "SELECT count(*) FROM books"),
    ("```SQL\nSELECT 1\n```", "SELECT 1"),
    ("```sqlite\nSELECT title FROM books\n", "SELECT title FROM books"),  # unterminated fence
    ("Here is the query:\n```sql\nSELECT a FROM t\n```\nIt returns every a.", "SELECT a FROM t"),
    ("```python\nprint('hi')\n```\n```sql\nSELECT a FROM t\n```", "SELECT a FROM t"),
    ("SQL: SELECT name FROM students", "SELECT name FROM students"),
    ("SQLite: SELECT name FROM students;", "SELECT name FROM students"),
    ("Query: SELECT name FROM students", "SELECT name FROM students"),
    ("Answer:\nSELECT name FROM students", "SELECT name FROM students"),
    ("To answer this, select the names:\nSELECT name FROM students",
     "SELECT name FROM students"),
    ("We need a join with the enrolment table. SELECT s.name FROM students AS s JOIN enrolments AS e "
     "ON s.id = e.student_id", "SELECT s.name FROM students AS s JOIN enrolments AS e ON s.id = e.student_id"),
    ("SELECT name FROM students\n\nThis query lists the name of every student.",
     "SELECT name FROM students"),
    ("SELECT name FROM students\nExplanation: it reads the students table.", "SELECT name FROM students"),
    ("SELECT name\nFROM students\nWHERE age > 20\nNote: age is in years.",
     "SELECT name\nFROM students\nWHERE age > 20"),
    ("SELECT name FROM students. This returns all names.", "SELECT name FROM students"),
    ("SELECT name FROM students WHERE city = 'St. Louis'. Done.",
     "SELECT name FROM students WHERE city = 'St. Louis'"),
    ("SELECT name FROM students\n- it reads one table\n- no join", "SELECT name FROM students"),
    ("SELECT a FROM t; SELECT b FROM t;", "SELECT a FROM t"),
    ("SELECT a FROM t\nSELECT b FROM t", "SELECT a FROM t"),
    ("SELECT a FROM t\n\nSELECT b FROM u", "SELECT a FROM t"),
    ("SELECT a FROM t UNION SELECT b FROM u", "SELECT a FROM t UNION SELECT b FROM u"),
    ("SELECT a FROM t\nEXCEPT\nSELECT a FROM u;", "SELECT a FROM t\nEXCEPT\nSELECT a FROM u"),
    ("SELECT name FROM t WHERE id IN (\n  SELECT tid FROM u\n)",
     "SELECT name FROM t WHERE id IN (\n  SELECT tid FROM u\n)"),
    ("WITH top AS (SELECT id FROM t ORDER BY score DESC LIMIT 3) SELECT * FROM top",
     "WITH top AS (SELECT id FROM t ORDER BY score DESC LIMIT 3) SELECT * FROM top"),
    ("select distinct name from students where grade = 'A'",
     "select distinct name from students where grade = 'A'"),
    ("SELECT\n  Name,\n  Age\nFROM People", "SELECT\n  Name,\n  Age\nFROM People"),
    ("SELECT Name as n FROM People", "SELECT Name as n FROM People"),
    ("SELECT name FROM t WHERE note = 'a; b'", "SELECT name FROM t WHERE note = 'a; b'"),
    ("SELECT \"first name\" FROM \"the people\"", "SELECT \"first name\" FROM \"the people\""),
    ("SELECT count(*) FROM t<|im_end|>\n<|im_start|>user\nSELECT 2", "SELECT count(*) FROM t"),
    ("SELECT count(*) FROM t</s>garbage", "SELECT count(*) FROM t"),
    ("The query is `SELECT max(age) FROM people`.", "SELECT max(age) FROM people"),
    ("SELECT a FROM t -- every a\n", "SELECT a FROM t -- every a"),
    ("SELECT name FROM students WHERE grade = 'A'\n\n1. We filter on grade.",
     "SELECT name FROM students WHERE grade = 'A'"),
    # Write statements are extracted as written so that the execution guard refuses them.
    ("DELETE FROM students WHERE id IN (SELECT id FROM old);", "DELETE FROM students WHERE id IN (SELECT id FROM old)"),
    ("```sql\nDROP TABLE students;\nSELECT 1;\n```", "DROP TABLE students"),
    ("INSERT INTO t SELECT * FROM u; SELECT 1", "INSERT INTO t SELECT * FROM u"),
    # Nothing that looks like SQL.
    ("", ""),
    ("I don't know.", ""),
    ("<|im_end|>", ""),
    # Truncated at max_new_tokens: returned as written (the evaluation calls it a parse error).
    ("SELECT name FROM students WHERE age >", "SELECT name FROM students WHERE age >"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_extract_sql(raw: str, expected: str) -> None:
    assert extract_sql(raw) == expected


def test_extracted_sql_is_the_models_own_text() -> None:
    """Extraction cuts, it never reformats: spacing and case survive."""
    raw = "sql:   select   Name from   T  where x=1 ;\nthanks"
    assert extract_sql(raw) == "select   Name from   T  where x=1"


def test_a_model_stuck_in_a_join_loop_does_not_hang_extraction() -> None:
    """sqlglot takes exponential time on many JOINs without ON; extraction stays linear."""
    import time

    from text2sql.sql.parse import MAX_BARE_JOINS, too_hard_to_parse

    loop = "SELECT T1 " + "JOIN products AS T1 " * 60
    start = time.perf_counter()
    assert extract_sql(loop) == loop.strip()  # returned as written: a parse error downstream
    assert time.perf_counter() - start < 5
    assert too_hard_to_parse(loop)
    bare = "SELECT a FROM t " + "JOIN p " * MAX_BARE_JOINS
    assert not too_hard_to_parse(bare) and too_hard_to_parse(bare + "JOIN q")
    assert not too_hard_to_parse("SELECT a FROM t " + "JOIN p USING (id) " * 40)
    assert not too_hard_to_parse("SELECT a FROM t " + "CROSS JOIN p " * 40)
