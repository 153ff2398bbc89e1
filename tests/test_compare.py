"""Result comparison (Spider's execution semantics), DISTINCT rule, ORDER BY rule, normalized match."""

from __future__ import annotations

import sqlite3

import pytest

from text2sql.evaluation.compare import (
    normalized_match,
    normalize_sql,
    order_matters,
    prepare_for_execution,
    remove_distinct,
    results_match,
)

# (name, gold rows, predicted rows, order matters, expected)
TRICKY_PAIRS = [
    ("identical", [(1, "a"), (2, "b")], [(1, "a"), (2, "b")], False, True),
    ("rows reordered, no ORDER BY", [(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False, True),
    ("rows reordered, ORDER BY", [(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False),
    ("same order, ORDER BY", [(1, "a"), (2, "b")], [(1, "a"), (2, "b")], True, True),
    ("duplicates count", [(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),
    ("duplicate missing (DISTINCT kept)", [(1,), (1,)], [(1,)], False, False),
    ("duplicates in another order", [(1,), (2,), (1,)], [(1,), (1,), (2,)], False, True),
    ("columns swapped", [(1, "a"), (2, "b")], [("a", 1), ("b", 2)], False, True),
    ("columns swapped, ORDER BY", [(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True),
    ("columns swapped and rows reordered", [(1, "a"), (2, "b")], [("b", 2), ("a", 1)], False, True),
    ("columns swapped, rows reordered, ORDER BY", [(1, "a"), (2, "b")], [("b", 2), ("a", 1)],
     True, False),
    ("column values re-paired across rows", [(1, "a"), (2, "b")], [(1, "b"), (2, "a")], False,
     False),
    ("extra column", [(1,)], [(1, "a")], False, False),
    ("missing column", [(1, "a")], [(1,)], False, False),
    ("one more row", [(1,)], [(1,), (2,)], False, False),
    ("NULL equals NULL", [(None, 1)], [(None, 1)], False, True),
    ("NULL is not 0", [(None,)], [(0,)], False, False),
    ("NULL is not empty text", [(None,)], [("",)], False, False),
    ("1 equals 1.0", [(1,)], [(1.0,)], False, True),
    ("1 and 1.0 beside another number", [(1, 1.5)], [(1.0, 1.5)], False, True),
    ("text '1' is not number 1", [("1",)], [(1,)], False, False),
    ("floats exact, no rounding", [(0.3,)], [(0.1 + 0.2,)], False, False),
    ("BLOB is not text", [(b"x",)], [("x",)], False, False),
    ("both empty", [], [], False, True),
    ("both empty, different columns", [], [], True, True),
    ("empty vs one row", [], [(1,)], False, False),
    ("one row vs empty", [(None,)], [], False, False),
    ("text case matters", [("Paris",)], [("paris",)], False, False),
    ("seven columns permuted", [tuple(range(7)), tuple(range(10, 17))],
     [tuple(reversed(range(7))), tuple(reversed(range(10, 17)))], False, True),
    ("identical columns, rows paired differently", [(1, 1, 2), (2, 2, 1)],
     [(1, 2, 1), (2, 1, 2)], False, True),
    ("same column multisets, no permutation works", [(1, 1), (2, 2)], [(1, 2), (2, 1)], False,
     False),
]


@pytest.mark.parametrize("name,gold,pred,ordered,expected", TRICKY_PAIRS,
                         ids=[p[0] for p in TRICKY_PAIRS])
def test_tricky_pairs(name, gold, pred, ordered, expected):
    assert results_match(gold, pred, ordered) is expected


def test_many_identical_columns_are_fast():
    # 12 all-NULL columns: 12! permutations if identical columns were not collapsed.
    gold = [(None,) * 11 + (i,) for i in range(50)]
    pred = [(i,) + (None,) * 11 for i in range(50)]
    assert results_match(gold, pred, False)


# Tricky pairs on real SQL: (gold, predicted, match with DISTINCT removed, match with it kept)
SQL_PAIRS = [
    ("SELECT name FROM p", "SELECT DISTINCT name FROM p", True, False),
    ("SELECT count(DISTINCT name) FROM p", "SELECT count(name) FROM p", True, False),
    ("SELECT name FROM p ORDER BY age", "SELECT name FROM p ORDER BY age DESC", False, False),
    ("SELECT name, age FROM p", "SELECT age, name FROM p", True, True),
    ("SELECT avg(age) FROM p", "SELECT sum(age) * 1.0 / count(*) FROM p", True, True),
    ("SELECT name FROM p WHERE age > 100", "SELECT name FROM p WHERE age < 0", True, True),
    # ORDER BY only inside a subquery: the outer rows are a bag (officially a list)
    ("SELECT name FROM p WHERE age IN (SELECT age FROM p ORDER BY age LIMIT 1)",
     "SELECT name FROM p WHERE age = 25 ORDER BY name DESC", True, True),
    # UNION removes duplicates itself; the stripped DISTINCT no longer does
    ("SELECT name FROM p UNION SELECT name FROM p", "SELECT DISTINCT name FROM p", False, True),
    ("SELECT nick FROM p", "SELECT nick FROM p WHERE nick IS NOT NULL", False, False),
]


@pytest.fixture(scope="module")
def people() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE p (name TEXT, age INTEGER, nick TEXT)")
    conn.executemany("INSERT INTO p VALUES (?, ?, ?)",
                     [("ann", 30, None), ("bob", 25, "b"), ("ann", 41, "a"), ("cy", 25, None)])
    return conn


@pytest.mark.parametrize("gold,pred,removed,kept", SQL_PAIRS)
def test_sql_pairs(people, gold, pred, removed, kept):
    for keep_distinct, expected in ((False, removed), (True, kept)):
        g = people.execute(prepare_for_execution(gold, keep_distinct)).fetchall()
        p = people.execute(prepare_for_execution(pred, keep_distinct)).fetchall()
        assert results_match(g, p, order_matters(gold)) is expected, (keep_distinct, g, p)


@pytest.mark.parametrize("sql,expected", [
    ("SELECT a FROM t ORDER BY a", True),
    ("select a from t order  by a desc limit 3", True),
    ("SELECT a FROM t WHERE b = (SELECT b FROM u ORDER BY c LIMIT 1)", False),
    ("SELECT a FROM x UNION SELECT a FROM y ORDER BY a", True),
    ("SELECT a FROM t", False),
    ("SELECT 'order by' FROM t", False),
    ("this is not SQL order by", True),  # unparsable: falls back to the official text rule
])
def test_order_matters(sql, expected):
    assert order_matters(sql) is expected


def test_remove_distinct_like_the_official_evaluator():
    sql = "SELECT DISTINCT count(distinct a) FROM t WHERE b = 'DISTINCT' UNION SELECT 1"
    assert remove_distinct(sql) == "SELECT  count( a) FROM t WHERE b = 'DISTINCT' UNION SELECT 1"
    assert prepare_for_execution("SELECT a FROM t WHERE b > = 1", keep_distinct=True) == \
        "SELECT a FROM t WHERE b >= 1"


@pytest.mark.parametrize("gold,pred", [
    ("SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.id = T2.sid "
     "WHERE T2.year = \"2014\"",
     "select singer.name from singer join concert on singer.id=concert.sid "
     "where concert.year='2014';"),
    ("SELECT count(*) FROM singer", "SELECT COUNT(*)  FROM   Singer"),
    ("SELECT T1.name FROM singer AS T1", "SELECT name FROM singer"),
    ("SELECT name FROM t ORDER BY age ASC", "SELECT name FROM t ORDER BY age"),
    ("SELECT count(*) AS n, x FROM t GROUP BY x ORDER BY n DESC",
     "SELECT count(*), x FROM t GROUP BY x ORDER BY count(*) DESC"),
    ("SELECT a FROM t INNER JOIN u ON t.id = u.id", "SELECT a FROM t JOIN u ON t.id = u.id"),
    ("SELECT a FROM t WHERE b <> 1", "SELECT a FROM t WHERE b != 1"),
])
def test_normalized_match_normalizes(gold, pred):
    assert normalized_match(gold, pred), (normalize_sql(gold), normalize_sql(pred))


@pytest.mark.parametrize("gold,pred", [
    ("SELECT name FROM t WHERE x = 'Paris'", "SELECT name FROM t WHERE x = 'paris'"),
    ("SELECT name, age FROM t", "SELECT age, name FROM t"),
    ("SELECT DISTINCT name FROM t", "SELECT name FROM t"),
    ("SELECT a.name FROM emp AS a JOIN emp AS b ON a.boss = b.id",
     "SELECT b.name FROM emp AS a JOIN emp AS b ON a.boss = b.id"),
    ("SELECT name FROM t", "SELECT name FROM t WHERE"),
    ("SELECT name FROM t", ""),
])
def test_normalized_match_rejects(gold, pred):
    assert not normalized_match(gold, pred)


def test_normalized_match_of_a_join_loop_returns_at_once():
    """sqlglot's parser is exponential in bare JOINs; a looping model writes dozens."""
    import time

    from text2sql.evaluation.compare import normalized_match

    start = time.perf_counter()
    assert not normalized_match("SELECT 1", "SELECT T1 " + "JOIN products AS T1 " * 40)
    assert time.perf_counter() - start < 2
