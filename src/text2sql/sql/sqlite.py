"""Running untrusted SQL safely: read-only, one query, bounded in time, rows and bytes.

Three independent guards keep a database unchanged whatever the SQL says: the file
is opened with ``mode=ro``, ``PRAGMA query_only`` is on, and an authorizer allows
only reading (no ATTACH, no PRAGMA, no writes). Before SQLite sees it, the text must
be a single statement starting with SELECT or WITH, and a WITH must end in a SELECT.
:func:`open_readonly` is the one way this package opens a SQLite file.

Bounds, so that no query can take the run down with it:

- time: SQLite's progress handler stops the query at ``timeout_s`` (the official
  Spider evaluator's asyncio timeout cannot interrupt SQLite);
- rows: at most ``max_rows + 1`` rows are fetched;
- bytes: no string or BLOB may exceed :data:`MAX_VALUE_BYTES` (SQLite's
  ``SQLITE_LIMIT_LENGTH``), SQLite's heap is capped at :data:`SQLITE_HEAP_BYTES`
  and temporary tables stay in it, and the rows fetched may hold at most
  ``max_bytes`` of values, counted row by row as they arrive (``too_large``);
- the process: :func:`run_queries` (``ask``, voting) and the evaluator run queries in
  worker processes with an address-space limit (:mod:`text2sql.sql.workerpool`), so what
  the bounds above miss costs one worker, never the caller.

Error kinds (:func:`classify_error`): ``empty_prediction``, ``parse_error`` (SQLite
or the tokenizer rejects the syntax, or the text starts with no SQL statement),
``not_read_only`` (several statements, or a statement that is not a query: a
write, ATTACH, PRAGMA and the like, refused before SQLite or by the authorizer),
``unknown_table``, ``unknown_column`` (no such column, or an ambiguous one),
``timeout``, ``too_large`` (a value, the result or SQLite's memory over its bound),
``execution_error`` (anything else SQLite reports, e.g. a wrong function).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot.tokens import TokenType

from text2sql.io import DataError

# Error kinds (also the evaluation's error taxonomy).
EMPTY = "empty_prediction"
PARSE_ERROR = "parse_error"
NOT_READ_ONLY = "not_read_only"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
TIMEOUT = "timeout"
TOO_LARGE = "too_large"
EXEC_ERROR = "execution_error"

ERROR_KINDS = (EMPTY, PARSE_ERROR, NOT_READ_ONLY, UNKNOWN_TABLE, UNKNOWN_COLUMN, TIMEOUT,
               TOO_LARGE, EXEC_ERROR)
MAX_VALUE_BYTES = 16 * 2**20  # longest string or BLOB SQLite may build
MAX_RESULT_BYTES = 64 * 2**20  # default budget for the values of one result
SQLITE_HEAP_BYTES = 512 * 2**20  # SQLite's own memory, sorts and temporary tables included

# Statements SQLite knows that are not queries: refused as not read-only. Any other
# first word (``SELEC``) is a parse error, not an attack.
# Statements that are not queries: SQLite's, then those of the other engines answered here
# (DuckDB: COPY, INSTALL, LOAD, SET, EXPORT, ...; PostgreSQL: GRANT, TRUNCATE, LISTEN, ...),
# refused as not read-only rather than as unparsable.
STATEMENT_WORDS = frozenset("""ALTER ANALYZE ATTACH BEGIN COMMIT CREATE DELETE DETACH DROP END
    EXPLAIN INSERT PRAGMA REINDEX RELEASE REPLACE ROLLBACK SAVEPOINT UPDATE UPSERT VACUUM
    VALUES
    CALL CHECKPOINT CLUSTER COMMENT COPY DEALLOCATE DECLARE DISCARD DO EXECUTE EXPORT FORCE
    GRANT IMPORT INSTALL LISTEN LOAD LOCK MERGE NOTIFY PREPARE REFRESH RESET REVOKE SECURITY
    SET START TRUNCATE UNLISTEN USE""".split())
_WRITES = (TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.REPLACE)

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
# Read-only pragmas a schema reader needs (``open_readonly(..., introspect=True)``).
_SCHEMA_PRAGMAS = frozenset({"table_info", "table_xinfo", "foreign_key_list", "index_list",
                             "index_info"})


class MissingDatabase(DataError, FileNotFoundError):
    """The SQLite file is not there."""


@dataclass
class ExecResult:
    rows: list[tuple] | None
    error: str | None = None  # one of the error kinds above
    message: str = ""
    truncated: bool = False
    seconds: float = 0.0
    columns: list[str] | None = None  # result column names, as SQLite reports them

    @property
    def ok(self) -> bool:
        return self.error is None


@lru_cache(maxsize=1024)  # a gold query and a prediction that copies it are checked once
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
    word = first.text.upper()
    if first.token_type not in (TokenType.SELECT, TokenType.WITH):
        if word in STATEMENT_WORDS:
            return NOT_READ_ONLY, f"only SELECT/WITH queries run here, not {word}"
        return PARSE_ERROR, f"near {first.text!r}: not an SQL statement"
    if first.token_type == TokenType.WITH:
        # The statement after the CTE list is the first SELECT or write outside parentheses.
        depth = 0
        for token in statements[0]:
            depth += (token.token_type == TokenType.L_PAREN) - (token.token_type == TokenType.R_PAREN)
            if depth == 0 and token.token_type == TokenType.SELECT:
                break
            if depth == 0 and token.token_type in _WRITES:
                # a write with a WITH clause: SQLite's authorizer would stop it too
                return NOT_READ_ONLY, f"only SELECT/WITH queries run here, not {token.text.upper()}"
    return None, ""


def _authorizer(action: int, arg1: Any, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _introspecting_authorizer(action: int, arg1: Any, *args: Any) -> int:
    if action == sqlite3.SQLITE_PRAGMA and str(arg1).lower() in _SCHEMA_PRAGMAS:
        return sqlite3.SQLITE_OK
    return _authorizer(action, arg1, *args)


def open_readonly(db_path: str | Path, *, introspect: bool = False) -> sqlite3.Connection:
    """A connection that cannot change the file, whatever it is asked to run.

    Bytes that are not UTF-8 are decoded with replacement. ``introspect`` also lets
    through the read-only pragmas a schema reader needs (``table_info``,
    ``foreign_key_list``, ...); untrusted SQL never gets such a connection.
    """
    path = Path(db_path)
    if not path.is_file():
        raise MissingDatabase(f"{path}: SQLite file not found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.execute("PRAGMA query_only = ON")
    conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temp tables count against the heap cap
    conn.execute(f"PRAGMA hard_heap_limit = {SQLITE_HEAP_BYTES}")  # process-wide in SQLite
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.set_authorizer(_introspecting_authorizer if introspect else _authorizer)
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
    if "too big" in m or "out of memory" in m or "memoryerror" in m:
        return TOO_LARGE
    return EXEC_ERROR


def _batch_bytes(rows: list[tuple]) -> int:
    return sum(len(v) if v.__class__ in (str, bytes) else 8 for row in rows for v in row)


def fetch_bounded(cursor: Any, *, max_rows: int, max_bytes: int, start: float,
                  deadline: float | None = None) -> ExecResult:
    """The rows of an executed DB-API ``cursor`` (SQLite's or psycopg's), at most ``max_rows``
    and ``max_bytes`` of values, fetched in batches that grow while the rows are small.

    A result over ``max_bytes`` stops as ``too_large`` before much of it is held; past
    ``deadline`` (``time.monotonic()``) between two batches, as ``timeout``.
    """
    rows: list[tuple] = []
    size, batch = 0, 1
    while len(rows) <= max_rows:
        more = cursor.fetchmany(min(batch, max_rows + 1 - len(rows)))
        if not more:
            break
        size += _batch_bytes(more)
        if size > max_bytes:
            return ExecResult(None, TOO_LARGE, f"the result holds more than {max_bytes:,} "
                              f"bytes (stopped after {len(rows) + len(more)} rows)",
                              seconds=time.monotonic() - start)
        rows += more
        if deadline is not None and time.monotonic() > deadline and len(rows) <= max_rows:
            return ExecResult(None, TIMEOUT, f"no result within {deadline - start:g} s "
                              f"(stopped after {len(rows)} rows)", seconds=time.monotonic() - start)
        # next batch: at most 1/16 of what is left of the budget, at the mean row size
        mean = max(size // len(rows), 1)
        batch = max(1, min(4096, (max_bytes - size) // (16 * mean)))
    truncated = len(rows) > max_rows
    return ExecResult(rows[:max_rows], truncated=truncated, seconds=time.monotonic() - start,
                      columns=[d[0] for d in cursor.description or ()])


def execute(conn: sqlite3.Connection, sql: str, *, timeout_s: float = 5.0,
            max_rows: int = 10000, max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
    """Run one read-only query on ``conn`` with a deadline, a row cap and a byte budget.

    Rows are fetched in batches that grow while the rows are small (one row first) and
    their values counted (a string or BLOB by its length, anything else as 8 bytes), so a
    result over ``max_bytes`` stops as ``too_large`` before much of it is held; a batch of
    unexpectedly huge rows meets the worker's memory limit instead (``too_large`` too).
    """
    kind, msg = check_read_only_query(sql)
    if kind is not None:
        return ExecResult(None, kind, msg)
    start = time.monotonic()
    deadline = start + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    try:
        return fetch_bounded(conn.execute(sql), max_rows=max_rows, max_bytes=max_bytes,
                             start=start)
    except (sqlite3.Error, sqlite3.Warning) as e:
        kind = classify_error(str(e))
        message = f"no result within {timeout_s:g} s (stopped inside SQLite)" \
            if kind == TIMEOUT else str(e)
        return ExecResult(None, kind, message, seconds=time.monotonic() - start)
    except MemoryError as e:
        return ExecResult(None, TOO_LARGE, f"MemoryError: {e}", seconds=time.monotonic() - start)
    except (OverflowError, ValueError) as e:
        return ExecResult(None, EXEC_ERROR, f"{type(e).__name__}: {e}",
                          seconds=time.monotonic() - start)
    finally:
        conn.set_progress_handler(None, 0)


def run_query(db_path: str | Path, sql: str, *, timeout_s: float = 5.0,
              max_rows: int = 10000, max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
    """Open ``db_path`` read-only, run ``sql`` in this process, close."""
    conn = open_readonly(db_path)
    try:
        return execute(conn, sql, timeout_s=timeout_s, max_rows=max_rows, max_bytes=max_bytes)
    finally:
        conn.close()


# --- in worker processes ---------------------------------------------------------

_connections: dict[str, sqlite3.Connection] = {}


def cached_connection(db_path: str) -> sqlite3.Connection:
    """A read-only connection to ``db_path``, kept open for the next task of this worker."""
    conn = _connections.get(db_path)
    if conn is None:
        if len(_connections) >= 32:  # keep a worker's open files bounded
            _connections.pop(next(iter(_connections))).close()
        conn = _connections[db_path] = open_readonly(db_path)
    return conn


def hard_timeout(timeout_s: float, queries: int = 1) -> float:
    """How long a worker may run ``queries`` queries before it is killed: SQLite stops
    each at ``timeout_s``; the margin covers a single long step, and start-up."""
    return queries * (timeout_s + 1.0) + 0.5


def failed_result(failure: Any) -> ExecResult:
    """The :class:`ExecResult` of a task whose worker hung, died or raised."""
    kind = TIMEOUT if failure.reason == "hung" else EXEC_ERROR
    return ExecResult(None, kind, failure.message)


def _run_task(task: tuple[str, str, float, int, int]) -> ExecResult:
    db_path, sql, timeout_s, max_rows, max_bytes = task
    return execute(cached_connection(db_path), sql, timeout_s=timeout_s, max_rows=max_rows,
                   max_bytes=max_bytes)


def run_queries(queries: Sequence[tuple[str | Path, str]], *, timeout_s: float = 5.0,
                max_rows: int = 10000, max_bytes: int = MAX_RESULT_BYTES,
                workers: int = 1) -> list[ExecResult]:
    """Run each ``(db_path, sql)`` in a worker process (:mod:`text2sql.sql.workerpool`, as the
    evaluator does): a query that exhausts the worker's memory or hangs it costs that
    query only (``too_large`` / ``execution_error``, ``timeout``), never the caller."""
    from text2sql.sql.workerpool import run_tasks

    for db_path, _ in queries:
        if not Path(db_path).is_file():
            raise MissingDatabase(f"{db_path}: SQLite file not found")
    tasks = [(str(db), sql, timeout_s, max_rows, max_bytes) for db, sql in queries]
    answers = run_tasks(_run_task, tasks, workers=workers, hard_timeout_s=hard_timeout(timeout_s))
    return [a if isinstance(a, ExecResult) else failed_result(a) for a in answers]


def shorten(value: Any, limit: int = 80) -> str:
    """``value`` as text of at most about ``limit`` characters; a cut is marked with how
    much was left out (``'aaaa… [+999,920 chars]'``, ``<BLOB 20,000,000 bytes>``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<BLOB {len(value):,} bytes>"
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [+{len(text) - limit:,} chars]"
