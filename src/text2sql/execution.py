"""Running untrusted SQL safely: read-only, one query, a deadline inside SQLite, a row cap.

Three independent guards keep a database unchanged whatever the SQL says: the file
is opened with ``mode=ro``, ``PRAGMA query_only`` is on, and an authorizer allows
only reading (no ATTACH, no PRAGMA, no writes). The deadline is enforced by SQLite's
progress handler, so a runaway cartesian join stops on time instead of hanging.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

# Error kinds (also the evaluation's error taxonomy).
EMPTY = "empty_prediction"
PARSE_ERROR = "parse_error"
NOT_READ_ONLY = "not_read_only"
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
TIMEOUT = "timeout"
EXEC_ERROR = "execution_error"

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
    """``(error_kind, message)`` if ``sql`` is not exactly one SELECT/WITH query, else ``(None, "")``."""
    if not sql or not sql.strip():
        return EMPTY, "no SQL"
    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except sqlglot.errors.SqlglotError as e:
        return PARSE_ERROR, str(e).splitlines()[0]
    if len(statements) != 1:
        return NOT_READ_ONLY, f"expected one statement, got {len(statements)}"
    if not isinstance(statements[0], exp.Query):
        return NOT_READ_ONLY, f"only SELECT/WITH queries run here, not {statements[0].key.upper()}"
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
    conn.set_authorizer(_authorizer)
    return conn


def classify_error(message: str) -> str:
    m = message.lower()
    if "interrupted" in m:
        return TIMEOUT
    if "no such table" in m:
        return UNKNOWN_TABLE
    if "no such column" in m or "ambiguous column" in m:
        return UNKNOWN_COLUMN
    if "not authorized" in m or "readonly" in m or "read-only" in m:
        return NOT_READ_ONLY
    if "syntax error" in m or "incomplete input" in m:
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
    except sqlite3.Error as e:
        return ExecResult(None, classify_error(str(e)), str(e), seconds=time.monotonic() - start)
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
