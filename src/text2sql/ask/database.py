"""The database a question is asked of: :class:`Database`, met by a SQLite file
(:class:`SqliteDatabase`), a live PostgreSQL database (:class:`PostgresDatabase`) and a DuckDB
file or CSV/Parquet files (:class:`DuckdbDatabase`), and :func:`open_database` choosing
between them by location.

``ask``, ``chat``, ``serve`` and ``mcp`` call only what the protocol names, so a guard added to
the pipeline (:mod:`text2sql.ask.pipeline`) holds for every engine without an engine check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from text2sql.ask.duckdb import DuckdbDatabase
from text2sql.ask.postgres import PostgresDatabase
from text2sql.io import DataError
from text2sql.sql.duckdb import is_duckdb_location
from text2sql.sql.postgres import is_postgres_url
from text2sql.sql.sqlite import MAX_RESULT_BYTES, ExecResult

if TYPE_CHECKING:
    from text2sql.data.values import ValueIndex
    from text2sql.inference.voting import Candidate, Vote
    from text2sql.sql.schema import Schema


@runtime_checkable
class Database(Protocol):
    """What the answer pipeline needs of a database. ``str(db)`` is its location as shown
    (a path, or a URL with the password masked); ``dialect`` is the sqlglot dialect its SQL
    runs in when that is not SQLite's (``None`` for SQLite), ``engine`` its kind by name."""

    name: str
    engine: str
    dialect: str | None

    def schema(self, db_id: str | None = None) -> Schema:
        """Tables, columns and keys (named ``db_id`` when given)."""

    def why_no_tables(self) -> str:
        """What a schema without tables means here, for an error message."""

    def shown(self, sql: str) -> str:
        """SQLite ``sql`` as it runs here (for display)."""

    def run(self, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000,
            max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run one untrusted SELECT/WITH query read-only, bounded."""

    def vote(self, candidates: Sequence[Candidate], *, timeout_s: float, max_rows: int,
             max_bytes: int = MAX_RESULT_BYTES, prefer_nonempty: bool = True) -> Vote:
        """Self-consistency: run each candidate as :meth:`run` would and vote by result."""

    def value_index(self) -> ValueIndex:
        """The short text values, for the prompt's value hints."""

    def sample_rows(self, table: str, n: int) -> list[tuple]:
        """The first ``n`` rows of ``table``, for prompts that show rows."""

    def close(self) -> None:
        """Let go of connections (none for a file)."""


class SqliteDatabase:
    """A SQLite file, opened read-only for each query by the project's runner (a worker
    process with a memory limit; :mod:`text2sql.sql.sqlite`)."""

    engine = "sqlite"
    dialect: str | None = None

    def __init__(self, path: str | Path, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqliteDatabase) and (other.path, other.name) == \
            (self.path, self.name)

    def __hash__(self) -> int:
        return hash((self.path, self.name))

    def schema(self, db_id: str | None = None) -> Schema:
        from text2sql.ask.questions import read_schema

        return read_schema(self.path, db_id or self.name)

    def why_no_tables(self) -> str:
        return "the database has no tables to ask about"

    def shown(self, sql: str) -> str:
        return sql

    def run(self, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000,
            max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        from text2sql.sql.sqlite import run_queries

        [result] = run_queries([(self.path, sql)], timeout_s=timeout_s, max_rows=max_rows,
                               max_bytes=max_bytes, workers=1)
        return result

    def vote(self, candidates: Sequence[Candidate], *, timeout_s: float, max_rows: int,
             max_bytes: int = MAX_RESULT_BYTES, prefer_nonempty: bool = True) -> Vote:
        """In a worker process (:func:`choose_all`, the runner of voting and evaluation), so
        a bomb among the candidates costs one vote."""
        from text2sql.inference.voting import choose_all

        [chosen] = choose_all([(str(self.path), candidates)], timeout_s=timeout_s,
                              max_rows=max_rows, max_bytes=max_bytes,
                              prefer_nonempty=prefer_nonempty, workers=1)
        return chosen

    def value_index(self) -> ValueIndex:
        from text2sql.data.values import value_index

        return value_index(self.path)

    def sample_rows(self, table: str, n: int) -> list[tuple]:
        import sys

        from text2sql.data.values import sample_rows

        # uncut: text2sql.data.values.sample_rows cuts long text once, as for any database
        return sample_rows(self.path, table, n, max_chars=sys.maxsize)

    def close(self) -> None:
        pass


def open_database(location: str | Path, schemas: Sequence[str] = ("public",), *,
                  name: str | None = None, pool_size: int = 0,
                  setting: str = "--db", allow_writable_role: bool = False) -> Database:
    """A PostgreSQL database for a ``postgresql://`` URL (reading ``schemas``; ``pool_size``
    pooled connections; a role that can write refused unless ``allow_writable_role``); DuckDB
    for a .duckdb/.ddb file, a CSV or Parquet file, a glob or a folder of them (one table per
    file); else the SQLite file at ``location``. ``setting`` is named in the error when there
    is nothing there."""
    if is_postgres_url(str(location)):
        return PostgresDatabase(str(location), schemas, name=name, pool_size=pool_size,
                                allow_writable_role=allow_writable_role)
    if is_duckdb_location(location):
        return DuckdbDatabase(location, name=name, setting=setting)
    path = Path(location)
    if not path.is_file():
        raise DataError(f"{path}: SQLite file not found ({setting}); a PostgreSQL database is "
                        "given as postgresql://user@host/db, DuckDB as a .duckdb file, CSV "
                        "and Parquet files as a folder or a glob ('sales/*.parquet')")
    return SqliteDatabase(path, name)
