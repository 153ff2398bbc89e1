"""DuckDB's guards and runner: a DuckDB file, or CSV and Parquet files seen as tables, asked
read-only by :class:`text2sql.ask.duckdb.DuckdbDatabase`.

What runs is checked first: one SELECT/WITH query (:func:`text2sql.sql.sqlite.check_read_only_query`),
translated by sqlglot, and none of DuckDB's functions that reach files, settings, extensions
or other databases, nor a file named as a table (:func:`beyond_reading`). Then DuckDB's own
limits hold whatever the text says (:func:`connect`): the file opened ``read_only`` (files: an
in-memory database with one view per file), ``memory_limit``, ``threads``, no spilling to disk,
no extension loading, ``enable_external_access = false`` (only the views' files stay readable)
and ``lock_configuration = true``. DuckDB has no statement timeout: a timer thread interrupts the
query (:func:`execute`). Every DuckDB call runs in a worker process of
:mod:`text2sql.sql.workerpool` (:func:`run_task`), because ``memory_limit`` does not bound every
allocation (``repeat('x', 10^9)`` builds its string outside it): what escapes costs the worker
(its address-space limit), never the caller, which never holds a DuckDB connection.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.sql.sqlite import (
    EXEC_ERROR,
    NOT_READ_ONLY,
    PARSE_ERROR,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN_COLUMN,
    UNKNOWN_TABLE,
    ExecResult,
    fetch_bounded,
)

DUCKDB_SUFFIXES = (".duckdb", ".ddb")
FILE_SUFFIXES = (".csv", ".tsv", ".parquet")
MEMORY_LIMIT = "512MB"  # below the worker's address-space headroom (1 GiB)
THREADS = 2
INTROSPECTION_TIMEOUT_S = 30.0

# DuckDB functions a question never needs and that reach beyond the tables: read or list
# files (read_csv, parquet_scan, glob, sniff_csv, ...), other databases and lakes (sqlite_scan,
# postgres_*, iceberg_*, delta_scan, ...), settings, secrets and extensions (current_setting,
# duckdb_settings, duckdb_secrets, getenv, ...), pragmas as functions, or run SQL given as text
# (query, query_table). DuckDB's own enable_external_access stops the file readers too.
FILE_FUNCTIONS = re.compile(
    r"(read_\w+|\w+_scan|\w+_attach|parquet_\w+|glob|sniff_csv|st_read\w*|duckdb_\w+|"
    r"current_setting|getenv|which_secret|\w*secret\w*|pragma_\w+|query|query_table|"
    r"sqlite_\w+|postgres_\w+|mysql_\w+|iceberg_\w+|delta_\w+|http\w*|install\w*|load\w*|"
    r"copy\w*|export\w*|import\w*|attach|detach|checkpoint|force_checkpoint|set\w*|reset|"
    r"pragma|summarize|nextval|currval|setval|ducklake\w*|excel\w*|json_execute_serialized_sql)",
    re.IGNORECASE)
# A table named like a file or URL: DuckDB reads ``FROM 'data.csv'`` as that file.
FILE_AS_TABLE = re.compile(r"[/\\:*?]|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|gz|zst|xlsx|"
                           r"arrow|db|sqlite|duckdb)$", re.IGNORECASE)


@dataclass(frozen=True)
class DuckdbSource:
    """What a DuckDB connection opens: a DuckDB ``file``, or ``tables`` (name, CSV or
    Parquet file) seen as views of an in-memory database. Small and picklable: it goes
    to the worker with each task."""

    file: str | None = None
    tables: tuple[tuple[str, str], ...] = ()

    def paths(self) -> list[Path]:
        return [Path(self.file)] if self.file else [Path(p) for _, p in self.tables]


def is_duckdb_location(location: str | Path) -> bool:
    """Whether ``location`` is for DuckDB: a .duckdb/.ddb file, a CSV or Parquet file, a
    glob of them, or a folder holding them."""
    text = str(location)
    if any(c in text for c in "*?["):
        return text.lower().endswith(FILE_SUFFIXES)
    path = Path(text)
    if path.suffix.lower() in DUCKDB_SUFFIXES + FILE_SUFFIXES:
        return True
    return path.is_dir() and any(p.suffix.lower() in FILE_SUFFIXES for p in path.iterdir())


def table_name(path: Path) -> str:
    """The table a file is seen as: its name without suffixes, other characters than letters,
    digits and ``_`` as ``_`` (``sales-2024.csv`` -> ``sales_2024``), so SQL needs no quotes."""
    stem = path.name.split(".")[0] if not path.name.startswith(".") else path.stem
    name = re.sub(r"\W+", "_", stem).strip("_") or "table"
    return f"t_{name}" if name[0].isdigit() else name


def source_of(location: str | Path, setting: str = "--db") -> DuckdbSource:
    """The :class:`DuckdbSource` of a .duckdb file, a CSV/Parquet file, a glob or a folder
    of them (one table per file, :func:`table_name`); a clear error when there is nothing."""
    import glob

    text = str(location)
    path = Path(text)
    if path.suffix.lower() in DUCKDB_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{path}: DuckDB file not found ({setting})")
        return DuckdbSource(file=str(path.resolve()))
    if any(c in text for c in "*?["):
        files = [Path(p) for p in sorted(glob.glob(text))]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir())
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: no such file or folder ({setting})")
    files = [p for p in files if p.is_file() and p.suffix.lower() in FILE_SUFFIXES]
    if not files:
        raise DataError(f"{text}: no CSV or Parquet files ({', '.join(FILE_SUFFIXES)}) there "
                        f"({setting})")
    tables: dict[str, str] = {}
    for p in files:
        name = table_name(p)
        if name.lower() in {t.lower() for t in tables}:
            raise DataError(f"{p}: its table name {name!r} is taken by {tables[name]}; rename "
                            "one of the files (a table is named after its file)")
        tables[name] = str(p.resolve())
    return DuckdbSource(tables=tuple(tables.items()))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(source: DuckdbSource, *, memory_limit: str = MEMORY_LIMIT,
            threads: int = THREADS) -> Any:
    """A DuckDB connection that cannot change a file or reach another one (module doc)."""
    import duckdb

    from text2sql.sql.schema import quote_identifier

    config: dict[str, Any] = {"memory_limit": memory_limit, "threads": threads,
                              "temp_directory": "", "autoinstall_known_extensions": False,
                              "autoload_known_extensions": False,
                              "allow_community_extensions": False}
    if source.file is not None:
        conn = duckdb.connect(source.file, read_only=True, config=config)
    else:
        conn = duckdb.connect(":memory:", config=config)
        for name, path in source.tables:
            reader = "read_parquet" if path.lower().endswith(".parquet") else "read_csv_auto"
            conn.execute(f"CREATE VIEW {quote_identifier(name)} AS "
                         f"SELECT * FROM {reader}({_literal(path)})")
        # the views read their files when queried: only those stay allowed
        paths = ", ".join(_literal(p) for _, p in source.tables)
        conn.execute(f"SET allowed_paths = [{paths}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET lock_configuration = true")
    return conn


def beyond_reading(duck_sql: str) -> str | None:
    """What in ``duck_sql`` would reach beyond reading the tables, else ``None``: a call of a
    :data:`FILE_FUNCTIONS` function, a file named as a table (``FROM 'x.csv'``), a write
    inside the query, or ``SELECT ... INTO``."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(duck_sql)
    except sqlglot.errors.SqlglotError as e:
        return f"SQL that sqlglot's DuckDB tokenizer rejects ({str(e).splitlines()[0]})"
    writes = (TokenType.INSERT, TokenType.UPDATE, TokenType.DELETE, TokenType.MERGE,
              TokenType.INTO, TokenType.COPY, TokenType.SET, TokenType.PRAGMA)
    for token, after in zip(tokens, [*tokens[1:], None], strict=True):
        if token.token_type in writes:
            return f"{token.text.upper()} inside the query"
        if (after is not None and after.token_type == TokenType.L_PAREN
                and token.token_type not in (TokenType.STRING, TokenType.NUMBER)
                and FILE_FUNCTIONS.fullmatch(token.text)):
            return (f"a call of {token.text.lower()}(), a DuckDB function that reaches files, "
                    "settings or other databases")
    try:
        tree = sqlglot.parse_one(duck_sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None  # DuckDB will say what is wrong with it
    for table in tree.find_all(exp.Table):
        if FILE_AS_TABLE.search(table.name):
            return f"a file named as a table ({table.name!r}); ask about the tables listed"
    return None


def classify_error(error: Exception) -> str:
    """The error kind of a DuckDB exception, by its class and message."""
    kind = type(error).__name__
    message = str(error)
    if kind == "InterruptException":
        return TIMEOUT
    if kind == "OutOfMemoryException" or isinstance(error, MemoryError):
        return TOO_LARGE
    if kind == "CatalogException" and "Table with name" in message:
        return UNKNOWN_TABLE
    if kind == "BinderException" and ("Referenced column" in message or "Ambiguous" in message
                                      or "not found in FROM clause" in message):
        return UNKNOWN_COLUMN
    if kind == "ParserException":
        return PARSE_ERROR
    if kind == "PermissionException" or "read-only mode" in message \
            or "configuration has been locked" in message:
        return NOT_READ_ONLY
    return EXEC_ERROR


def execute(conn: Any, duck_sql: str, *, timeout_s: float, max_rows: int,
            max_bytes: int) -> ExecResult:
    """Run DuckDB SQL (already guarded) on a cursor of ``conn``, interrupted by a timer thread
    at ``timeout_s``, fetched within ``max_rows`` and ``max_bytes``."""
    import duckdb

    start = time.monotonic()
    cursor = conn.cursor()
    timer = threading.Timer(timeout_s, cursor.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cursor.execute(duck_sql)
        return fetch_bounded(cursor, max_rows=max_rows, max_bytes=max_bytes, start=start,
                             deadline=start + timeout_s)
    except (duckdb.Error, MemoryError) as e:
        kind = classify_error(e)
        message = (f"no result within {timeout_s:g} s (interrupted inside DuckDB)"
                   if kind == TIMEOUT else (str(e).strip().splitlines() or [type(e).__name__])[0])
        return ExecResult(None, kind, message, seconds=time.monotonic() - start)
    except (OverflowError, ValueError) as e:
        return ExecResult(None, EXEC_ERROR, f"{type(e).__name__}: {e}",
                          seconds=time.monotonic() - start)
    finally:
        timer.cancel()
        cursor.close()


# --- in worker processes ---------------------------------------------------------

_COLUMNS_SQL = """
SELECT table_name, column_name, lower(data_type) FROM information_schema.columns
WHERE table_catalog = current_database() AND table_schema = 'main'
ORDER BY table_name, ordinal_position
"""
_KEYS_SQL = """
SELECT table_name, constraint_type, constraint_column_names, referenced_table,
       referenced_column_names
FROM duckdb_constraints()
WHERE database_name = current_database() AND schema_name = 'main'
  AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
"""
TEXT_TYPES = ("varchar", "text", "string", "char", "bpchar")


def _schema_rows(conn: Any) -> tuple[list[tuple], list[tuple]]:
    return conn.execute(_COLUMNS_SQL).fetchall(), conn.execute(_KEYS_SQL).fetchall()


def _text_values(conn: Any, columns: list[tuple[str, str, str]], per_column: int,
                 max_chars: int, budget_s: float) -> list[tuple[str, str, str]]:
    from text2sql.sql.schema import quote_identifier

    entries: list[tuple[str, str, str]] = []
    stop = time.monotonic() + budget_s
    for table, column, ctype in columns:
        if not ctype.startswith(TEXT_TYPES) or time.monotonic() > stop:
            continue
        q = quote_identifier(column)
        sql = (f"SELECT DISTINCT {q} FROM {quote_identifier(table)} WHERE length({q}) "
               f"BETWEEN 2 AND {max_chars} LIMIT {per_column}")
        result = execute(conn, sql, timeout_s=2.0, max_rows=per_column, max_bytes=64 * 2**20)
        entries += [(table, column, v) for (v,) in result.rows or [] if isinstance(v, str)]
    return entries


def run_task(task: tuple[Any, ...]) -> Any:
    """One DuckDB job in a worker: ``("query", source, sql, timeout_s, max_rows, max_bytes)``
    gives an :class:`ExecResult`; ``("schema", source)`` the columns and keys;
    ``("values", source, columns, per_column, max_chars, budget_s)`` the short text values;
    ``("rows", source, table, n)`` a table's first rows. ``memory_limit`` and ``threads`` ride
    at the end of each task."""
    import duckdb

    from text2sql.sql.schema import quote_identifier

    job, source, *args, memory_limit, threads = task
    try:
        conn = connect(source, memory_limit=memory_limit, threads=threads)
    except duckdb.Error as e:
        if job == "query":
            return ExecResult(None, EXEC_ERROR, f"cannot open it with DuckDB: "
                              f"{str(e).strip().splitlines()[0]}")
        raise DataError(f"cannot open it with DuckDB: {str(e).strip().splitlines()[0]}") from None
    try:
        if job == "query":
            sql, timeout_s, max_rows, max_bytes = args
            return execute(conn, sql, timeout_s=timeout_s, max_rows=max_rows,
                           max_bytes=max_bytes)
        if job == "schema":
            return _schema_rows(conn)
        if job == "values":
            return _text_values(conn, *args)
        if job == "rows":
            table, n = args
            result = execute(conn, f"SELECT * FROM {quote_identifier(table)} LIMIT {int(n)}",
                             timeout_s=INTROSPECTION_TIMEOUT_S, max_rows=int(n),
                             max_bytes=16 * 2**20)
            return result.rows or []
        raise ValueError(f"unknown DuckDB job {job!r}")
    finally:
        conn.close()

