"""Database schemas: read from Spider's ``tables.json`` or a SQLite file, written as DDL.

A :class:`Schema` is the one representation every loader produces and every
prompt is built from, whatever the dataset's layout.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.io import DataError, read_json


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)


@dataclass
class Schema:
    db_id: str
    tables: list[Table]
    foreign_keys: list[ForeignKey] = field(default_factory=list)

    def table(self, name: str) -> Table:
        """The table called ``name`` (case-insensitive)."""
        for t in self.tables:
            if t.name.lower() == name.lower():
                return t
        raise KeyError(f"{self.db_id}: no table {name!r}")

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]


def _spider_entry_to_schema(entry: dict[str, Any], where: str) -> Schema:
    for key in ("db_id", "table_names_original", "column_names_original", "column_types"):
        if key not in entry:
            raise DataError(f"{where}: missing field {key!r} (Spider's tables.json format)")
    table_names: list[str] = entry["table_names_original"]
    columns: list[list[Column]] = [[] for _ in table_names]
    index: dict[int, tuple[str, str]] = {}
    for i, ((t, name), ctype) in enumerate(
        zip(entry["column_names_original"], entry["column_types"], strict=False)
    ):
        if t < 0:  # Spider's "*" pseudo-column
            continue
        columns[t].append(Column(name, ctype))
        index[i] = (table_names[t], name)
    pks: dict[str, list[str]] = {t: [] for t in table_names}
    for pk in entry.get("primary_keys", []):
        for i in pk if isinstance(pk, list) else [pk]:
            if i in index:
                t, c = index[i]
                pks[t].append(c)
    fks = [
        ForeignKey(index[a][0], index[a][1], index[b][0], index[b][1])
        for a, b in entry.get("foreign_keys", [])
        if a in index and b in index
    ]
    tables = [Table(n, cols, pks[n]) for n, cols in zip(table_names, columns, strict=True)]
    return Schema(entry["db_id"], tables, fks)


def load_spider_tables(path: str | Path) -> dict[str, Schema]:
    """Schemas by ``db_id`` from a Spider/BIRD-style ``tables.json``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of database schemas")
    return {
        e.get("db_id", f"#{i}"): _spider_entry_to_schema(e, f"{path}: entry {i}")
        for i, e in enumerate(data)
    }


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open a SQLite file read-only; bytes that are not UTF-8 are decoded with replacement."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: SQLite file not found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.execute("PRAGMA query_only = ON")
    return conn


def schema_from_sqlite(path: str | Path, db_id: str | None = None) -> Schema:
    """Read tables, columns, primary and foreign keys from a SQLite file."""
    path = Path(path)
    conn = connect_readonly(path)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY rowid"
            )
        ]
        tables, fks = [], []
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            info = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
            cols = [Column(r[1], (r[2] or "text").lower()) for r in info]
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            tables.append(Table(name, cols, pk))
            for r in conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall():
                ref_table, from_col, to_col = r[2], r[3], r[4]
                if to_col is None:  # references the parent's primary key implicitly
                    ref_info = conn.execute(f"PRAGMA table_info(\"{ref_table}\")").fetchall()
                    pk_cols = [x[1] for x in ref_info if x[5]]
                    to_col = pk_cols[0] if pk_cols else from_col
                fks.append(ForeignKey(name, from_col, ref_table, to_col))
    finally:
        conn.close()
    return Schema(db_id or path.stem, tables, fks)


def _quote(name: str) -> str:
    return name if name.replace("_", "").isalnum() and not name[0].isdigit() else f'"{name}"'


def to_ddl(schema: Schema, tables: list[str] | None = None) -> str:
    """``CREATE TABLE`` statements with column types, primary keys and foreign keys.

    Only the named tables (all by default) are written, in schema order, and only
    the foreign keys whose both ends are among them.
    """
    keep = {t.lower() for t in (tables or schema.table_names)}
    out = []
    for t in schema.tables:
        if t.name.lower() not in keep:
            continue
        lines = [f"  {_quote(c.name)} {c.type.upper() or 'TEXT'}" for c in t.columns]
        if t.primary_key:
            lines.append(f"  PRIMARY KEY ({', '.join(_quote(c) for c in t.primary_key)})")
        for fk in schema.foreign_keys:
            if fk.table.lower() == t.name.lower() and fk.ref_table.lower() in keep:
                lines.append(
                    f"  FOREIGN KEY ({_quote(fk.column)}) REFERENCES "
                    f"{_quote(fk.ref_table)}({_quote(fk.ref_column)})"
                )
        out.append(f"CREATE TABLE {_quote(t.name)} (\n" + ",\n".join(lines) + "\n);")
    return "\n".join(out)


def to_compact(schema: Schema, tables: list[str] | None = None) -> str:
    """One line per table, ``table(col, col*, col->other.col)``: primary keys starred."""
    keep = {t.lower() for t in (tables or schema.table_names)}
    out = []
    for t in schema.tables:
        if t.name.lower() not in keep:
            continue
        refs = {
            fk.column: f"{fk.ref_table}.{fk.ref_column}"
            for fk in schema.foreign_keys
            if fk.table.lower() == t.name.lower() and fk.ref_table.lower() in keep
        }
        cols = []
        for c in t.columns:
            s = c.name + ("*" if c.name in t.primary_key else "")
            if c.name in refs:
                s += f"->{refs[c.name]}"
            cols.append(s)
        out.append(f"{t.name}({', '.join(cols)})")
    return "\n".join(out)
