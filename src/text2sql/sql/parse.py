"""SQL helpers built on sqlglot (SQLite dialect)."""

from __future__ import annotations

import sqlite3
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

# sqlglot's parser takes time exponential in the number of consecutive JOINs without
# ON/USING (it tries every nesting of them: 14 take 0.2 s, 30 would take hours), and a
# model stuck in a loop writes dozens. Real queries have a few.
MAX_BARE_JOINS = 10


@lru_cache(maxsize=4096)
def parse_sqlite(sql: str) -> exp.Expression | None:
    """The syntax tree of one SQLite statement; ``None`` when sqlglot cannot parse it
    (or would take exponential time trying: see :func:`too_hard_to_parse`).

    Cached: the evaluation reads a gold query's difficulty, order and normal form from
    one parse. The tree is shared, so a caller that changes it works on a ``.copy()``.
    """
    dialect = sqlglot.Dialect.get_or_raise("sqlite")
    try:
        tokens = dialect.tokenize(sql)  # once, for both the JOIN check and the parser
        if _longest_bare_join_run(tokens) > MAX_BARE_JOINS:
            return None
        result = dialect.parser().parse(tokens, sql)
    except sqlglot.errors.SqlglotError:
        return None
    if not result or result[0] is None:
        return None
    return exp.Block(expressions=result) if len(result) > 1 else result[0]


def referenced_tables(sql: str) -> set[str] | None:
    """Lower-cased names of the tables ``sql`` reads (CTE names excluded); ``None`` if unparsable."""
    tree = parse_sqlite(sql)
    if tree is None:
        return None
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}


# SQLite calls the progress handler every this many virtual-machine steps.
_PROGRESS_STEP = 10_000


def run_error(conn: sqlite3.Connection, sql: str, max_steps: int = 2_000_000_000,
              max_rows: int = 100_000) -> str | None:
    """Why ``sql`` does not run on ``conn`` (SQLite's message), or ``None`` when it runs.

    The query runs in full (up to ``max_rows`` rows) under a budget of SQLite
    virtual-machine steps rather than seconds, so the verdict is the same on a
    fast and a slow machine; a query over budget is reported as such.
    """
    calls = 0

    def tick() -> int:
        nonlocal calls
        calls += 1
        return 1 if calls * _PROGRESS_STEP > max_steps else 0

    conn.set_progress_handler(tick, _PROGRESS_STEP)
    try:
        cur = conn.execute(sql)
        cur.fetchmany(max_rows)
        return None
    except sqlite3.OperationalError as e:
        if str(e) == "interrupted":
            return f"over the budget of {max_steps:,} SQLite steps"
        return str(e)
    except (sqlite3.Error, sqlite3.Warning, ValueError) as e:
        # Warning: more than one statement; ValueError: a NUL character in the text.
        return str(e)
    finally:
        conn.set_progress_handler(None, 0)


def too_hard_to_parse(sql: str) -> bool:
    """True when sqlglot would take exponential time on ``sql``: more than
    ``MAX_BARE_JOINS`` JOINs in a row without an ON or USING (a linear token scan).

    Callers that parse model output should treat such SQL as a parse error.
    """
    try:
        tokens = sqlglot.tokenize(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return False
    return _longest_bare_join_run(tokens) > MAX_BARE_JOINS


def _longest_bare_join_run(tokens: list) -> int:
    run = longest = 0
    pending = False  # inside a JOIN that has not had its ON/USING yet
    for i, tok in enumerate(tokens):
        if tok.token_type == TokenType.JOIN:
            if pending:
                run += 1
                longest = max(longest, run)
            cross = i > 0 and tokens[i - 1].token_type in (TokenType.CROSS, TokenType.NATURAL)
            pending = not cross
        elif tok.token_type in (TokenType.ON, TokenType.USING) and pending:
            pending, run = False, 0
    if pending:
        longest = max(longest, run + 1)
    return longest
