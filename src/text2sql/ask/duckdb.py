"""A DuckDB file, or a folder or glob of CSV and Parquet files seen as tables, asked
read-only: :class:`DuckdbDatabase`.

What it runs is checked by :mod:`text2sql.sql.duckdb` (one SELECT/WITH query, translated from
SQLite by sqlglot, no DuckDB function that reaches files, settings or other databases) and run
under DuckDB's own limits (read-only, ``memory_limit``, ``threads``, external access off,
configuration locked, a statement timeout by interrupt), each call in a worker process so a
query that escapes ``memory_limit`` costs the worker only. The schema and text values are read
the same way, and kept until a file changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text2sql.sql.duckdb import MEMORY_LIMIT, THREADS, DuckdbSource, source_of
from text2sql.sql.schema import Column, ForeignKey, Schema, Table
from text2sql.sql.sqlite import MAX_RESULT_BYTES, ExecResult, hard_timeout

if TYPE_CHECKING:
    from text2sql.data.values import ValueIndex
    from text2sql.inference.voting import Candidate, Vote

OPEN_MARGIN_S = 5.0  # a worker's start, DuckDB's import and open, before the query's clock


class DuckdbDatabase:
    """A DuckDB file (``--db shop.duckdb``) or CSV/Parquet files, one table per file
    (``--db sales/``, ``--db 'sales/*.parquet'``). A :class:`text2sql.ask.database.Database`."""

    engine = "duckdb"
    dialect: str | None = "duckdb"

    def __init__(self, location: str | Path, *, name: str | None = None,
                 memory_limit: str = MEMORY_LIMIT, threads: int = THREADS,
                 setting: str = "--db"):
        self.location = str(location)
        self.source: DuckdbSource = source_of(location, setting)
        self.memory_limit, self.threads = memory_limit, threads
        self.name = name or _name_of(self.location)
        self._schema: tuple[tuple[int, ...], Schema] | None = None
        self._values: tuple[tuple[int, ...], ValueIndex] | None = None

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"DuckdbDatabase({self.location!r}, name={self.name!r})"

    def _task(self, job: str, *args: Any, timeout_s: float) -> Any:
        """Run one :func:`text2sql.sql.duckdb.run_task` job in a worker process."""
        from text2sql.io import DataError
        from text2sql.sql.duckdb import run_task
        from text2sql.sql.sqlite import failed_result
        from text2sql.sql.workerpool import TaskFailed, run_tasks

        task = (job, self.source, *args, self.memory_limit, self.threads)
        [answer] = run_tasks(run_task, [task], workers=1,
                             hard_timeout_s=hard_timeout(timeout_s) + OPEN_MARGIN_S)
        if isinstance(answer, TaskFailed):
            if job == "query":
                return failed_result(answer)
            raise DataError(f"{self}: {answer.message.strip().splitlines()[-1]}")
        return answer

    def _stamp(self) -> tuple[int, ...]:
        """When the files last changed: the cached schema and values are read again after."""
        return tuple(p.stat().st_mtime_ns if p.exists() else -1 for p in self.source.paths())

    def schema(self, db_id: str | None = None) -> Schema:
        """Tables and views, columns, types, primary and foreign keys (schema ``main``)."""
        cached = self._schema
        if cached is None or cached[0] != self._stamp():
            stamp = self._stamp()
            columns, keys = self._task("schema", timeout_s=30.0)
            cached = self._schema = (stamp, _schema_of(self.name, columns, keys))
        schema = cached[1]
        return schema if db_id is None else Schema(db_id, schema.tables, schema.foreign_keys)

    def why_no_tables(self) -> str:
        return "the DuckDB database has no tables in its main schema"

    def translate(self, sql: str) -> str:
        """The DuckDB SQL :meth:`run` executes for SQLite ``sql`` (sqlglot's translation);
        :class:`text2sql.sql.dialect.CannotTranslate` if none."""
        from text2sql.sql.dialect import translate

        return translate(sql, "duckdb")

    def shown(self, sql: str) -> str:
        """:meth:`translate`'s SQL, or a note saying why there is none (for display)."""
        from text2sql.sql.dialect import shown_or_why

        return shown_or_why(sql, self.translate)

    def run(self, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000,
            max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run one SQLite SELECT/WITH query, translated, read-only and bounded (module doc)."""
        from text2sql.sql.dialect import guarded_translation
        from text2sql.sql.duckdb import beyond_reading

        duck_sql = guarded_translation(sql, self.translate, beyond_reading, "DuckDB")
        if isinstance(duck_sql, ExecResult):
            return duck_sql
        return self._task("query", duck_sql, timeout_s, max_rows, max_bytes, timeout_s=timeout_s)

    def vote(self, candidates: Sequence[Candidate], *, timeout_s: float, max_rows: int,
             max_bytes: int = MAX_RESULT_BYTES, prefer_nonempty: bool = True) -> Vote:
        """Self-consistency: each distinct candidate through :meth:`run`."""
        from text2sql.inference.voting import choose_live

        return choose_live(self, candidates, timeout_s=timeout_s, max_rows=max_rows,
                           max_bytes=max_bytes, prefer_nonempty=prefer_nonempty)

    def value_index(self) -> ValueIndex:
        """The short text values of every text column (as for SQLite), read again when a
        file changes."""
        from text2sql.data.linking import schema_words
        from text2sql.data.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, ValueIndex
        from text2sql.sql.postgres import VALUES_BUDGET_S

        cached = self._values
        if cached is None or cached[0] != self._stamp():
            stamp, schema = self._stamp(), self.schema()
            columns = [(t.name, c.name, c.type) for t in schema.tables for c in t.columns]
            entries = self._task("values", columns, MAX_VALUES_PER_COLUMN, MAX_VALUE_CHARS,
                                 VALUES_BUDGET_S, timeout_s=VALUES_BUDGET_S + 5)
            cached = self._values = (stamp, ValueIndex(entries, schema_words(schema)))
        return cached[1]

    def sample_rows(self, table: str, n: int) -> list[tuple]:
        """The first ``n`` rows of ``table``."""
        if n <= 0:
            return []
        return self._task("rows", table, n, timeout_s=30.0)

    def close(self) -> None:
        pass  # no connection outlives a call


def _name_of(location: str) -> str:
    """``shop`` for shop.duckdb or sales.csv, ``sales`` for sales/ or sales/*.parquet."""
    path = Path(location)
    if any(c in location for c in "*?["):
        return path.parent.name or "files"
    return path.stem if path.is_file() else path.name or "files"


def _schema_of(name: str, columns: list[tuple], keys: list[tuple]) -> Schema:
    tables: dict[str, Table] = {}
    for table, column, ctype in columns:
        tables.setdefault(table, Table(table, [])).columns.append(Column(column, ctype))
    fks = []
    for table, kind, cols, ref_table, ref_cols in keys:
        if table not in tables:
            continue
        if kind == "PRIMARY KEY":
            tables[table].primary_key = list(cols)
        elif ref_table in tables:
            fks += [ForeignKey(table, c, ref_table, r)
                    for c, r in zip(cols, ref_cols, strict=False)]
    return Schema(name, list(tables.values()), fks)
