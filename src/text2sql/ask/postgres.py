"""A live PostgreSQL database asked read-only: :class:`PostgresDatabase`.

What it runs is checked by :mod:`text2sql.sql.postgres` (the guards: one SELECT/WITH query,
translated by sqlglot, no server function with side effects) and run in a read-only
transaction, always rolled back, through a server-side cursor, under ``statement_timeout``,
``lock_timeout`` and ``idle_in_transaction_session_timeout`` and the runner's row cap and byte
budget. The schema is read from the catalog of the allowed schemas, so linking and prompts are
the SQLite ones; the text values are indexed for value hints as a SQLite file's are. Passwords
never appear in what it prints, returns or raises. The strongest guard is the server's: connect
as a role with SELECT rights only (docs/postgresql.md); the first connection checks that the
role cannot write (:func:`write_rights`) and refuses one that can, unless allowed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from text2sql.io import DataError
from text2sql.sql.postgres import (
    CONNECT_TIMEOUT_S,
    INTROSPECTION_TIMEOUT_S,
    SCHEMA_NAME,
    VALUES_BUDGET_S,
    VALUES_COLUMN_TIMEOUT_S,
    VALUES_TTL_S,
    ConnectionFailed,
    beyond_reading,
    classify_error,
    exact_case,
    hide_password,
    is_postgres_url,
    masked,
)
from text2sql.sql.schema import Column, ForeignKey, Schema, Table, quote_identifier
from text2sql.sql.sqlite import (
    MAX_RESULT_BYTES,
    TIMEOUT,
    TOO_LARGE,
    ExecResult,
    fetch_bounded,
)

if TYPE_CHECKING:
    from text2sql.data.values import ValueIndex
    from text2sql.inference.voting import Candidate, Vote


class WritableRole(DataError):
    """The role connected as can change the database (a superuser, or write rights), and
    that was not allowed (``--allow-writable-role``)."""


class PostgresDatabase:
    """One PostgreSQL database: its URL (libpq's; empty parts come from ``PGHOST``,
    ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``... or ``~/.pgpass``), the schemas questions
    may read, and with ``pool_size`` a pool of connections (``serve``). A
    :class:`text2sql.ask.database.Database`.

    The first connection checks the role's rights: one that can write is refused
    (:class:`WritableRole`) unless ``allow_writable_role``, and then a warning is printed.
    """

    engine = "postgresql"
    dialect: str | None = "postgres"

    def __init__(self, url: str, schemas: Sequence[str] = ("public",), *,
                 name: str | None = None, pool_size: int = 0,
                 allow_writable_role: bool = False):
        if not is_postgres_url(url):
            raise DataError(f"{masked(url)}: not a PostgreSQL URL (postgresql://user@host/db)")
        bad = [s for s in schemas if not SCHEMA_NAME.fullmatch(s)]
        if not schemas or bad:
            raise DataError(f"schemas {list(schemas)!r}: give one or more schema names "
                            "(letters, digits, _ and $; e.g. public)")
        self.url, self.schemas, self.pool_size = url, list(schemas), pool_size
        self.name = name or self._target()["dbname"]
        self._pool: Any = None
        self._lock = threading.Lock()
        self._values: tuple[float, ValueIndex] | None = None
        self._schema: tuple[float, Schema] | None = None
        self.allow_writable_role = allow_writable_role
        self.role_rights: list[str] | None = None  # what the role may change; None: unchecked

    def __str__(self) -> str:
        return masked(self.url)

    def __repr__(self) -> str:
        return f"PostgresDatabase({masked(self.url)!r}, schemas={self.schemas!r})"

    def _target(self) -> dict[str, str]:
        """Host, port, database and user this URL reaches, environment included."""
        from psycopg.conninfo import conninfo_to_dict

        try:
            info = conninfo_to_dict(self.url)
        except Exception as e:  # noqa: BLE001 - psycopg's message, password hidden
            raise DataError(f"{masked(self.url)}: not a valid PostgreSQL URL "
                            f"({hide_password(str(e), self.url)})") from None
        user = str(info.get("user") or os.environ.get("PGUSER") or _login_name())
        return {"host": str(info.get("host") or os.environ.get("PGHOST") or "the local socket"),
                "port": str(info.get("port") or os.environ.get("PGPORT") or 5432),
                "dbname": str(info.get("dbname") or os.environ.get("PGDATABASE") or user),
                "user": user}

    def _options(self, timeout_s: float) -> dict[str, Any]:
        ms = int(timeout_s * 1000)
        settings = {"default_transaction_read_only": "on", "statement_timeout": ms,
                    "lock_timeout": ms, "idle_in_transaction_session_timeout": ms + 10_000,
                    "search_path": ",".join(self.schemas)}
        return {"options": " ".join(f"-c {k}={v}" for k, v in settings.items()),
                "application_name": "text2sql", "connect_timeout": CONNECT_TIMEOUT_S,
                "autocommit": False}

    def connect(self, timeout_s: float = INTROSPECTION_TIMEOUT_S) -> Any:
        """A new read-only session; a failure says where it tried and what to check. The
        first one checks the role (:meth:`check_role`)."""
        import psycopg

        try:
            conn = psycopg.connect(self.url, **self._options(timeout_s))
        except psycopg.Error as e:
            raise self._connect_error(e) from None
        if self.role_rights is None:
            try:
                self.check_role(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def check_role(self, conn: Any) -> list[str]:
        """What the role of ``conn`` may change (:func:`write_rights`); :class:`WritableRole`
        when that is anything and it was not allowed, else a warning on stderr."""
        rights = write_rights(conn, self.schemas)
        user = conn.info.user
        if rights and not self.allow_writable_role:
            raise WritableRole(writable_role_message(user, conn.info.dbname, self.schemas,
                                                     rights))
        if rights:
            print(f"text2sql: warning: {masked(self.url)}: role {user!r} can change the "
                  f"database ({'; '.join(rights)}); only this project's guards keep questions "
                  "read-only (--allow-writable-role)", file=sys.stderr, flush=True)
        self.role_rights = rights
        return rights

    def _connect_error(self, error: Exception) -> ConnectionFailed:
        t = self._target()
        why = " ".join(hide_password(str(error), self.url).split()).rstrip(".?")
        return ConnectionFailed(
            f"cannot connect to PostgreSQL at {t['host']}, port {t['port']} (database "
            f"{t['dbname']!r}, user {t['user']!r}): {why}. Check that the server runs there and "
            "accepts TCP connections (host, port, listen_addresses, firewall), the user name and "
            "password (in the URL, PGPASSWORD or ~/.pgpass), and that pg_hba.conf lets this "
            "client in")

    @contextmanager
    def session(self, timeout_s: float = INTROSPECTION_TIMEOUT_S) -> Iterator[Any]:
        """A connection (from the pool when there is one) whose transaction is rolled back."""
        if self.pool_size:
            import psycopg
            import psycopg_pool

            pool = self._open_pool()
            try:
                with pool.connection() as conn:
                    try:
                        yield conn
                    finally:
                        try:
                            conn.rollback()
                        except psycopg.OperationalError:
                            pass  # a lost connection: the pool drops it
            except psycopg_pool.PoolTimeout as e:
                raise self._connect_error(e) from None
            return
        conn = self.connect(timeout_s)
        try:
            yield conn
        finally:
            conn.close()  # never commits

    def _open_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self.connect().close()  # fail now, with the clear message, if it cannot connect
                self._pool = ConnectionPool(
                    self.url, kwargs=self._options(INTROSPECTION_TIMEOUT_S), min_size=1,
                    max_size=self.pool_size, open=True, check=ConnectionPool.check_connection,
                    name=f"text2sql-{self.name}", timeout=CONNECT_TIMEOUT_S)
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def translate(self, sql: str) -> str:
        """The PostgreSQL SQL :meth:`run` executes for SQLite ``sql`` (sqlglot's translation,
        names in the catalog's case); :class:`text2sql.sql.dialect.CannotTranslate` if none."""
        from text2sql.sql.dialect import translate

        return exact_case(translate(sql, "postgres"), self.schema())

    def shown(self, sql: str) -> str:
        """:meth:`translate`'s SQL, or a note saying why there is none (for display)."""
        from text2sql.sql.dialect import shown_or_why

        return shown_or_why(sql, self.translate)

    def run(self, sql: str, *, timeout_s: float = 5.0, max_rows: int = 10000,
            max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run one SQLite SELECT/WITH query, translated, read-only and bounded (module doc)."""
        from text2sql.sql.dialect import guarded_translation

        pg_sql = guarded_translation(sql, self.translate, beyond_reading, "PostgreSQL")
        if isinstance(pg_sql, ExecResult):
            return pg_sql
        return self.execute(pg_sql, timeout_s=timeout_s, max_rows=max_rows, max_bytes=max_bytes)

    def vote(self, candidates: Sequence[Candidate], *, timeout_s: float, max_rows: int,
             max_bytes: int = MAX_RESULT_BYTES, prefer_nonempty: bool = True) -> Vote:
        """Self-consistency on the server: each distinct candidate through :meth:`run`."""
        from text2sql.inference.voting import choose_live

        return choose_live(self, candidates, timeout_s=timeout_s, max_rows=max_rows,
                           max_bytes=max_bytes, prefer_nonempty=prefer_nonempty)

    def why_no_tables(self) -> str:
        return f"no tables this user may read in schemas {', '.join(self.schemas)} (--schemas)"

    def execute(self, pg_sql: str, *, timeout_s: float, max_rows: int,
                max_bytes: int = MAX_RESULT_BYTES) -> ExecResult:
        """Run PostgreSQL SQL in a read-only transaction, rolled back: no checks of its text."""
        import psycopg

        start = time.monotonic()
        with self.session(timeout_s) as conn:
            try:
                conn.execute("SET TRANSACTION READ ONLY")
                ms = max(int(timeout_s * 1000), 1)
                conn.execute(f"SET LOCAL statement_timeout = {ms}")
                conn.execute(f"SET LOCAL lock_timeout = {ms}")
                with conn.cursor(name="text2sql_query") as cur:  # server-side: one statement
                    cur.execute(pg_sql)
                    return fetch_bounded(cur, max_rows=max_rows, max_bytes=max_bytes,
                                         start=start, deadline=start + timeout_s)
            except psycopg.Error as e:
                kind = classify_error(e)
                message = (f"no result within {timeout_s:g} s (stopped by PostgreSQL's "
                           "statement_timeout)" if kind == TIMEOUT
                           else hide_password((str(e).strip().splitlines()
                                               or [type(e).__name__])[0], self.url))
                return ExecResult(None, kind, message, seconds=time.monotonic() - start)
            except MemoryError as e:
                return ExecResult(None, TOO_LARGE, f"MemoryError: {e}",
                                  seconds=time.monotonic() - start)

    def schema(self, db_id: str | None = None) -> Schema:
        """Tables (and views), columns, types, primary and foreign keys of the allowed schemas,
        read again after :data:`VALUES_TTL_S` seconds.

        A table name found in two schemas is taken from the first (as the search path does).
        """
        cached = self._schema
        if cached is None or time.monotonic() - cached[0] >= VALUES_TTL_S:
            cached = self._schema = (time.monotonic(), self._read_schema())
        schema = cached[1]
        return schema if db_id is None else Schema(db_id, schema.tables, schema.foreign_keys)

    def _read_schema(self) -> Schema:
        with self.session() as conn:
            conn.execute("SET TRANSACTION READ ONLY")
            columns = conn.execute(_COLUMNS_SQL, {"schemas": self.schemas}).fetchall()
            keys = conn.execute(_KEYS_SQL, {"schemas": self.schemas}).fetchall()
        tables: dict[str, Table] = {}
        owner: dict[str, str] = {}
        for nspname, relname, column, ctype in columns:
            if owner.setdefault(relname, nspname) != nspname:
                continue
            if relname not in tables:
                tables[relname] = Table(relname, [])
            tables[relname].columns.append(Column(column, ctype.lower()))
        fks = []
        for kind, nspname, relname, cols, ref_table, ref_cols in keys:
            if owner.get(relname) != nspname:
                continue
            if kind == "p":
                tables[relname].primary_key = list(cols)
            elif ref_table in tables:
                fks += [ForeignKey(relname, c, ref_table, r)
                        for c, r in zip(cols, ref_cols, strict=False)]
        return Schema(self.name, list(tables.values()), fks)

    def value_index(self) -> ValueIndex:
        """The short text values of every text column (as for SQLite), read again after
        :data:`VALUES_TTL_S` seconds."""
        from text2sql.data.linking import schema_words
        from text2sql.data.values import MAX_VALUE_CHARS, MAX_VALUES_PER_COLUMN, ValueIndex

        cached = self._values
        if cached is not None and time.monotonic() - cached[0] < VALUES_TTL_S:
            return cached[1]
        schema = self.schema()
        entries: list[tuple[str, str, str]] = []
        stop = time.monotonic() + VALUES_BUDGET_S
        with self.session() as conn:
            for table in schema.tables:
                for col in table.columns:
                    if not col.type.startswith(("text", "character", "citext", "name")) \
                            or time.monotonic() > stop:
                        continue
                    q = quote_identifier(col.name)
                    sql = (f"SELECT DISTINCT {q} FROM {quote_identifier(table.name)} WHERE "
                           f"length({q}) BETWEEN 2 AND {MAX_VALUE_CHARS} "
                           f"LIMIT {MAX_VALUES_PER_COLUMN}")
                    entries += [(table.name, col.name, v) for (v,) in self._read(
                        conn, sql, VALUES_COLUMN_TIMEOUT_S)]
        index = ValueIndex(entries, schema_words(schema))
        self._values = (time.monotonic(), index)
        return index

    def sample_rows(self, table: str, n: int) -> list[tuple]:
        """The first ``n`` rows of ``table`` (no order: whatever the server gives first)."""
        with self.session() as conn:
            return self._read(conn, f"SELECT * FROM {quote_identifier(table)} LIMIT {int(n)}")

    @staticmethod
    def _read(conn: Any, sql: str, timeout_s: float = INTROSPECTION_TIMEOUT_S) -> list[tuple]:
        """Rows of trusted SQL, read-only; a table that cannot be read (or not within
        ``timeout_s``) gives none."""
        import psycopg

        try:
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            return conn.execute(sql).fetchall()
        except psycopg.Error:
            return []
        finally:
            conn.rollback()


def write_rights(conn: Any, schemas: Sequence[str]) -> list[str]:
    """What the session's role may change, in words (empty: it can only read): superuser,
    CREATEROLE/CREATEDB, membership in a role that writes server files, runs programs or
    writes all data, CREATE on the database or on one of ``schemas``, INSERT/UPDATE/DELETE/
    TRUNCATE on a table of ``schemas``. Read in a rolled-back transaction."""
    try:
        conn.execute("SET TRANSACTION READ ONLY")
        found = []
        su, createrole, createdb = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
            "WHERE rolname = current_user").fetchone()
        found += [what for what, has in (("superuser", su), ("CREATEROLE", createrole),
                                         ("CREATEDB", createdb)) if has]
        found += [f"member of {r}" for (r,) in conn.execute(_POWERFUL_ROLES_SQL)]
        if conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')"
                        ).fetchone()[0]:
            found.append("CREATE on the database")
        found += [f"CREATE on schema {n}" for (n,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) "
            "AND has_schema_privilege(oid, 'CREATE') ORDER BY nspname", [list(schemas)])]
        writable = conn.execute(_WRITABLE_TABLES_SQL, {"schemas": list(schemas)}).fetchall()
        if writable:
            shown = ", ".join(f"{n}.{t}" for n, t, _ in writable[:3])
            more = f" and {len(writable) - 3} more" if len(writable) > 3 else ""
            privileges = sorted({p for *_, ps in writable for p in ps})
            found.append(f"{'/'.join(privileges)} on {shown}{more}")
        return found
    finally:
        conn.rollback()


def writable_role_message(user: str, dbname: str, schemas: Sequence[str],
                          rights: Sequence[str]) -> str:
    """Why role ``user`` is refused, and the SQL that makes a role that can only read."""
    import re

    def q(name: str) -> str:  # as one would type it: quoted only when it has to be
        return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else quote_identifier(name)

    grants = "\n".join(
        f"  GRANT USAGE ON SCHEMA {q(s)} TO text2sql_reader;\n"
        f"  GRANT SELECT ON ALL TABLES IN SCHEMA {q(s)} TO text2sql_reader;\n"
        f"  ALTER DEFAULT PRIVILEGES IN SCHEMA {q(s)} GRANT SELECT ON TABLES TO text2sql_reader;"
        for s in schemas)
    return (f"PostgreSQL role {user!r} can change database {dbname!r} ({'; '.join(rights)}): "
            "questions are answered only as a role that can only read, so a query that gets "
            "past this project's guards still cannot write. Create one (as an administrator) "
            "and put it in the URL:\n"
            "  CREATE ROLE text2sql_reader LOGIN PASSWORD '...';  -- no SUPERUSER, no other roles\n"
            f"  GRANT CONNECT ON DATABASE {q(dbname)} TO text2sql_reader;\n{grants}\n"
            "  ALTER ROLE text2sql_reader SET default_transaction_read_only = on;\n"
            "  -- before PostgreSQL 15 also: REVOKE CREATE ON SCHEMA public FROM PUBLIC;\n"
            "or pass --allow-writable-role to use this role anyway (only the text checks and the "
            "read-only transaction stand in the way then)")


_POWERFUL_ROLES_SQL = """
SELECT rolname FROM pg_roles
WHERE rolname IN ('pg_write_server_files', 'pg_execute_server_program', 'pg_write_all_data')
  AND pg_has_role(current_user, oid, 'MEMBER')
ORDER BY rolname
"""

_WRITABLE_TABLES_SQL = """
SELECT n.nspname, c.relname,
       ARRAY(SELECT p FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p
             WHERE has_table_privilege(c.oid, p))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
       OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
ORDER BY n.nspname, c.relname
"""


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"


_COLUMNS_SQL = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY array_position(%(schemas)s::text[], n.nspname::text), c.oid, a.attnum
"""

_KEYS_SQL = """
SELECT con.contype, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord),
       rc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class rc ON rc.oid = con.confrelid
WHERE con.contype IN ('p', 'f') AND n.nspname = ANY(%(schemas)s)
ORDER BY c.oid, con.contype DESC, con.oid
"""
