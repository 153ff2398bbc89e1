"""Running untrusted SQL safely: read-only, one query, a deadline inside SQLite, a row cap.

Three independent guards keep a database unchanged whatever the SQL says: the file
is opened with ``mode=ro``, ``PRAGMA query_only`` is on, and an authorizer allows
only reading (no ATTACH, no PRAGMA, no writes). Before SQLite sees it, the text must
be a single statement starting with SELECT or WITH. The deadline is enforced by
SQLite's progress handler, so a runaway cartesian join stops on time instead of
hanging (the official Spider evaluator's asyncio timeout cannot interrupt SQLite).
At most ``max_rows + 1`` rows are fetched, and no string or BLOB may exceed
:data:`MAX_VALUE_BYTES` (``SELECT randomblob(1e9)`` fails instead of taking 1 GB).

Error kinds (:func:`classify_error`): ``empty_prediction``, ``parse_error`` (SQLite
or the tokenizer rejects the syntax), ``not_read_only`` (several statements, not a
query, or a write/ATTACH/PRAGMA refused by the authorizer), ``unknown_table``,
``unknown_column`` (no such column, or an ambiguous one), ``timeout``,
``execution_error`` (anything else SQLite reports, e.g. a wrong function).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot.tokens import TokenType

# Error kinds (also the evaluation's error taxonomy).
EMPTY = "empty_prediction"
PARSE_ERROR = "parse_error"
NOT_READ_ONLY = "not_read_only"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
TIMEOUT = "timeout"
EXEC_ERROR = "execution_error"

ERROR_KINDS = (EMPTY, PARSE_ERROR, NOT_READ_ONLY, UNKNOWN_TABLE, UNKNOWN_COLUMN, TIMEOUT,
               EXEC_ERROR)
MAX_VALUE_BYTES = 100_000_000

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


@dataclass
class ExecResult:
    rows: list[tuple] | None
    error: str | None = None  # one of the error kinds above
    message: str = ""
    truncated: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def check_read_only_query(sql: str) -> tuple[str | None, str]:
    """``(error_kind, message)`` unless ``sql`` is one SELECT/WITH query; else ``(None, "")``.

    Uses sqlglot's tokenizer, not its parser: whether the query is valid SQL is for
    SQLite to say (sqlglot cannot parse every query SQLite runs).
    """
    if not sql or not sql.strip():
        return EMPTY, "no SQL"
    try:
        tokens = sqlglot.Dialect.get_or_raise("sqlite").tokenize(sql)
    except sqlglot.errors.SqlglotError as e:
        return PARSE_ERROR, str(e).splitlines()[0]
    statements: list[list] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    statements = [s for s in statements if s]
    if not statements:
        return EMPTY, "no SQL (only comments or semicolons)"
    if len(statements) != 1:
        return NOT_READ_ONLY, f"expected one statement, got {len(statements)}"
    first = statements[0][0]
    if first.token_type not in (TokenType.SELECT, TokenType.WITH):
        return NOT_READ_ONLY, f"only SELECT/WITH queries run here, not {first.text.upper()}"
    return None, ""


def _authorizer(action: int, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A connection that cannot change the file, whatever it is asked to run."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SQLite file not found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.execute("PRAGMA query_only = ON")
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.set_authorizer(_authorizer)
    return conn


def classify_error(message: str) -> str:
    """The error kind of an SQLite error message."""
    m = message.lower()
    if "interrupted" in m:
        return TIMEOUT
    if "no such table" in m:
        return UNKNOWN_TABLE
    if "no such column" in m or "ambiguous column" in m:
        return UNKNOWN_COLUMN
    if ("not authorized" in m or "authorization denied" in m or "readonly" in m
            or "read-only" in m or "one statement at a time" in m):
        return NOT_READ_ONLY
    if ("syntax error" in m or "incomplete input" in m or "unrecognized token" in m
            or "unterminated" in m):
        return PARSE_ERROR
    return EXEC_ERROR


def execute(conn: sqlite3.Connection, sql: str, *, timeout_s: float = 5.0,
            max_rows: int = 10000) -> ExecResult:
    """Run one read-only query on ``conn`` with a deadline and a row cap."""
    kind, msg = check_read_only_query(sql)
    if kind is not None:
        return ExecResult(None, kind, msg)
    start = time.monotonic()
    deadline = start + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        cur = conn.execute(sql)
        rows = cur.fetchmany(max_rows + 1)
        truncated = len(rows) > max_rows
        return ExecResult([tuple(r) for r in rows[:max_rows]], truncated=truncated,
                          seconds=time.monotonic() - start)
    except (sqlite3.Error, sqlite3.Warning) as e:
        kind = classify_error(str(e))
        message = f"no result within {timeout_s:g} s (stopped inside SQLite)" \
            if kind == TIMEOUT else str(e)
        return ExecResult(None, kind, message, seconds=time.monotonic() - start)
    except (OverflowError, ValueError, MemoryError) as e:
        return ExecResult(None, EXEC_ERROR, f"{type(e).__name__}: {e}",
                          seconds=time.monotonic() - start)
    finally:
        conn.set_progress_handler(None, 0)


def run_query(db_path: str | Path, sql: str, *, timeout_s: float = 5.0,
              max_rows: int = 10000) -> ExecResult:
    """Open ``db_path`` read-only, run ``sql``, close."""
    conn = open_readonly(db_path)
    try:
        return execute(conn, sql, timeout_s=timeout_s, max_rows=max_rows)
    finally:
        conn.close()
