"""The databases a server may open, by name: :class:`Catalog`.

Databases are found by listing one folder, or named in a YAML file, and asked by name
only: a name that is not in the listing (a path, ``..``, a typo) is a 404 before any
file is opened. A PostgreSQL database gets a pool of ``sql_workers`` connections.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from text2sql.ask.database import Database, SqliteDatabase, open_database
from text2sql.ask.questions import question_databases
from text2sql.io import DataError
from text2sql.sql.postgres import is_postgres_url
from text2sql.sql.duckdb import is_duckdb_location
from text2sql.sql.schema import SQLITE_SUFFIXES, find_database

if TYPE_CHECKING:
    from text2sql.sql.schema import Schema

DB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class UnknownDatabase(LookupError):
    """A database name that is not in the served folder (answered 404)."""


def read_database_list(path: Path, pool_size: int = 4, allow_writable_role: bool = False
                       ) -> dict[str, Database]:
    """The databases a YAML file names: ``name: sqlite-file`` (relative to the file),
    ``name: postgresql://...`` or ``name: {url: postgresql://..., schemas: [a, b]}``.
    ``${VAR}`` in a URL is read from the environment (keep passwords out of the file);
    a PostgreSQL role that can write is refused unless ``allow_writable_role``."""
    import os

    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read it as YAML ({e}) (--databases)") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a mapping of database names to SQLite files or "
                        "PostgreSQL URLs (school: school.sqlite, shop: postgresql://...)")
    found: dict[str, Database] = {}
    for name, value in data.items():
        where = f"{path}: {name!r}"
        if not isinstance(name, str) or not DB_NAME.fullmatch(name):
            raise DataError(f"{where}: a name is letters, digits, '_', '.', '-' (up to 128)")
        spec = value if isinstance(value, dict) else {"url": value}
        url, schemas = spec.get("url"), spec.get("schemas", ["public"])
        unknown = set(spec) - {"url", "schemas"}
        if not isinstance(url, str) or unknown or not isinstance(schemas, list):
            raise DataError(f"{where}: give a SQLite file, a PostgreSQL URL, or "
                            "{url: postgresql://..., schemas: [public]}"
                            + (f" (unknown keys: {sorted(unknown)})" if unknown else ""))
        location: str | Path = os.path.expandvars(url)
        if not is_postgres_url(url):
            location = path.parent / url
            if not location.is_file() and not is_duckdb_location(location):
                raise DataError(f"{where}: {location}: no SQLite or DuckDB file, CSV/Parquet "
                                f"file, folder or glob there (a path relative to {path.name}, "
                                "or a postgresql:// URL)")
        found[name] = open_database(location, [str(s) for s in schemas], name=name,
                                    pool_size=pool_size, allow_writable_role=allow_writable_role)
    return found


class Catalog:
    """The databases this server may open, by name: the SQLite files of one folder, or
    the SQLite files and PostgreSQL databases a YAML file names (:func:`read_database_list`).

    Folder: Spider layout (``<folder>/<db>/<db>.sqlite``) or flat (``<folder>/<db>.sqlite``);
    a ``tables.json`` beside them gives the schemas, as in the prepare stage.
    """

    def __init__(self, folder: Path, pool_size: int = 4, allow_writable_role: bool = False):
        self.listed: dict[str, Database] | None = None
        if folder.suffix in (".yaml", ".yml"):
            if not folder.is_file():
                raise DataError(f"{folder}: no such file (--databases)")
            self.listed = read_database_list(folder, pool_size, allow_writable_role)
            return
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of SQLite databases (--databases)")
        self.databases = question_databases(folder)
        self.folder: Path = self.databases.db_dir  # type: ignore[union-attr]

    def check_roles(self) -> list[str]:
        """Connect to each PostgreSQL database once, so a role that can write is refused at
        start (:class:`~text2sql.ask.postgres.WritableRole`); the names of those that cannot
        be reached now (checked when they first can)."""
        from text2sql.ask.postgres import PostgresDatabase
        from text2sql.sql.postgres import ConnectionFailed

        unreachable = []
        for name, db in (self.listed or {}).items():
            if isinstance(db, PostgresDatabase) and db.role_rights is None:
                try:
                    db.connect().close()
                except ConnectionFailed:
                    unreachable.append(name)
        return unreachable

    def close(self) -> None:
        """Close the connection pools."""
        for db in (self.listed or {}).values():
            db.close()

    def names(self) -> dict[str, Database]:
        """Every database, by name (a folder is listed anew: files may come and go)."""
        if self.listed is not None:
            return dict(self.listed)
        found: dict[str, Database] = {}
        for entry in sorted(self.folder.iterdir()):
            if not DB_NAME.fullmatch(entry.name):
                continue
            if entry.is_dir():
                path = find_database(self.folder, entry.name)
                if path is not None:
                    found[entry.name] = SqliteDatabase(path, entry.name)
            elif entry.suffix in SQLITE_SUFFIXES and entry.is_file() and entry.stem not in found:
                found[entry.stem] = SqliteDatabase(entry, entry.stem)
        return found

    def locate(self, name: str) -> Database:
        """The database called ``name``; :class:`UnknownDatabase` unless listed."""
        db = self.names().get(name) if DB_NAME.fullmatch(name) and ".." not in name else None
        if db is None:
            raise UnknownDatabase(f"unknown database {name!r}: GET /v1/databases lists the "
                                  "databases of this server")
        return db

    def schema(self, name: str) -> tuple[Database, Schema]:
        """The database called ``name`` and its schema."""
        db = self.locate(name)
        if self.listed is None and name in self.databases.schemas:  # type: ignore[union-attr]
            # tables.json's schema when it has this database (as the prepare stage)
            return db, self.databases.schemas[name]  # type: ignore[union-attr]
        return db, db.schema(name)
