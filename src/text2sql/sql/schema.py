"""Database schemas: read from Spider's ``tables.json`` or a SQLite file, written as DDL.

A :class:`Schema` is the one representation every loader produces and every
prompt is built from, whatever the dataset's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.io import DataError, read_json


@dataclass(frozen=True)
class Column:
    name: str
    type: str = "text"
    label: str | None = None  # a natural-language name (Spider's ``column_names``), if known


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
    label: str | None = None  # a natural-language name (Spider's ``table_names``), if known


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
    table_labels = _labels(entry.get("table_names"), table_names)
    column_names = entry["column_names_original"]
    column_labels = _labels([c[1] for c in entry.get("column_names") or []],
                            [c[1] for c in column_names])
    columns: list[list[Column]] = [[] for _ in table_names]
    index: dict[int, tuple[str, str]] = {}
    for i, ((t, name), ctype) in enumerate(zip(column_names, entry["column_types"], strict=False)):
        if t < 0:  # Spider's "*" pseudo-column
            continue
        if not 0 <= t < len(table_names):
            raise DataError(f"{where}: column {name!r} names table #{t}, but there are only "
                            f"{len(table_names)} tables")
        columns[t].append(Column(name, ctype, column_labels[i]))
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
    tables = [Table(n, cols, pks[n], label)
              for n, cols, label in zip(table_names, columns, table_labels, strict=True)]
    return Schema(entry["db_id"], tables, fks)


def _labels(labels: list[str] | None, names: list[str]) -> list[str | None]:
    """Natural-language names that say more than the original name (else ``None``)."""
    if not labels or len(labels) != len(names):
        return [None] * len(names)
    return [lab if isinstance(lab, str) and lab.replace(" ", "_").lower() != n.lower() else None
            for lab, n in zip(labels, names, strict=True)]


def load_spider_tables(path: str | Path) -> dict[str, Schema]:
    """Schemas by ``db_id`` from a Spider/BIRD-style ``tables.json``."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of database schemas")
    return {
        e.get("db_id", f"#{i}"): _spider_entry_to_schema(e, f"{path}: entry {i}")
        for i, e in enumerate(data)
    }


def schema_from_sqlite(path: str | Path, db_id: str | None = None) -> Schema:
    """Read tables, columns, primary and foreign keys from a SQLite file."""
    from text2sql.sql.sqlite import open_readonly  # the one read-only opener

    path = Path(path)
    conn = open_readonly(path, introspect=True)
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
            quoted = quote_identifier(name)
            info = conn.execute(f"PRAGMA table_info({quoted})").fetchall()
            cols = [Column(r[1], (r[2] or "text").lower()) for r in info]
            pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]
            tables.append(Table(name, cols, pk))
            for r in conn.execute(f"PRAGMA foreign_key_list({quoted})").fetchall():
                ref_table, from_col, to_col = r[2], r[3], r[4]
                if to_col is None:  # references the parent's primary key implicitly
                    ref_info = conn.execute(
                        f"PRAGMA table_info({quote_identifier(ref_table)})").fetchall()
                    pk_cols = [x[1] for x in ref_info if x[5]]
                    to_col = pk_cols[0] if pk_cols else from_col
                fks.append(ForeignKey(name, from_col, ref_table, to_col))
    finally:
        conn.close()
    return Schema(db_id or path.stem, tables, fks)


SQLITE_SUFFIXES = (".sqlite", ".db", ".sqlite3")


def find_database(db_dir: str | Path, db_id: str) -> Path | None:
    """``<db_dir>/<db_id>/<db_id>.sqlite`` (Spider, BIRD) or ``<db_dir>/<db_id>.sqlite``.

    ``.db`` and ``.sqlite3`` are accepted too; ``None`` when there is no such file.
    """
    db_dir = Path(db_dir)
    for suffix in SQLITE_SUFFIXES:
        for candidate in (db_dir / db_id / f"{db_id}{suffix}", db_dir / f"{db_id}{suffix}"):
            if candidate.is_file():
                return candidate
    return None


class SqliteSchemas(dict):
    """Schemas read from the SQLite files of a folder, each on first use.

    A ``dict`` so it can stand where a ``tables.json`` mapping stands; ``in``
    and ``[]`` look the file up, so a million examples over 50 databases read 50
    files, once each.
    """

    def __init__(self, db_dir: str | Path):
        super().__init__()
        self.db_dir = Path(db_dir)

    def __missing__(self, db_id: str) -> Schema:
        path = find_database(self.db_dir, db_id)
        if path is None:
            raise KeyError(db_id)
        schema = schema_from_sqlite(path, db_id)
        self[db_id] = schema
        return schema

    def __contains__(self, db_id: object) -> bool:
        if dict.__contains__(self, db_id):
            return True
        return isinstance(db_id, str) and find_database(self.db_dir, db_id) is not None

    def get(self, db_id: str, default: Schema | None = None) -> Schema | None:  # type: ignore[override]
        try:
            return self[db_id]
        except KeyError:
            return default


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier, safe in any position."""
    return '"' + name.replace('"', '""') + '"'


def _quote(name: str) -> str:
    plain = name.replace("_", "").isalnum() and name.isascii() and not name[0].isdigit()
    return name if plain else quote_identifier(name)


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return "X'..'"
    return repr(value)


def format_rows(rows: list[tuple]) -> str:
    """Rows as SQL tuples: ``(1, 'Ada'), (2, 'Bruno')``."""
    return ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)


def to_ddl(schema: Schema, tables: list[str] | None = None,
           sample_rows: dict[str, list[tuple]] | None = None) -> str:
    """``CREATE TABLE`` statements with column types, primary keys and foreign keys.

    Only the named tables (all by default) are written, in schema order, and only
    the foreign keys whose both ends are among them. ``sample_rows`` (by table
    name) adds a ``-- rows: (...)`` comment under each table that has some.
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
        if sample_rows and sample_rows.get(t.name):
            out.append(f"-- rows: {format_rows(sample_rows[t.name])}")
    return "\n".join(out)


def to_compact(schema: Schema, tables: list[str] | None = None,
               sample_rows: dict[str, list[tuple]] | None = None) -> str:
    """One line per table, ``table(col, col*, col->other.col)``: primary keys starred.

    ``sample_rows`` (by table name) adds a ``  rows: (...)`` line under a table.
    """
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
        if sample_rows and sample_rows.get(t.name):
            out.append(f"  rows: {format_rows(sample_rows[t.name])}")
    return "\n".join(out)


def _example(value: object, max_chars: int) -> str:
    text = value.hex()[:max_chars] if isinstance(value, bytes) else str(value)
    return text[:max_chars] + "…" if len(text) > max_chars else text


def to_mschema(schema: Schema, tables: list[str] | None = None,
               sample_rows: dict[str, list[tuple]] | None = None,
               examples: dict[str, dict[str, list]] | None = None,
               max_example_chars: int = 30) -> str:
    """XiYan's M-Schema: per table, one ``(column:TYPE, Primary Key, comment, Examples: [...])``
    line per column, then the foreign keys as ``table.column=other.column``.

    The comment is the column's natural-language label where the dataset has one (Spider's
    ``column_names``); ``examples`` (by table, then column) are a few stored values, written
    bare as M-Schema does. Only the named tables and the keys between them are written.
    """
    keep = {t.lower() for t in (tables or schema.table_names)}
    out = [f"【DB_ID】 {schema.db_id}", "【Schema】"]
    for t in schema.tables:
        if t.name.lower() not in keep:
            continue
        out.append(f"# Table: {t.name}" + (f", {t.label}" if t.label else ""))
        shown = (examples or {}).get(t.name, {})
        out.append("[")
        for c in t.columns:
            parts = [f"{c.name}:{c.type.upper() or 'TEXT'}"]
            if c.name in t.primary_key:
                parts.append("Primary Key")
            if c.label:
                parts.append(c.label)
            if shown.get(c.name):
                values = ", ".join(_example(v, max_example_chars) for v in shown[c.name])
                parts.append(f"Examples: [{values}]")
            out.append(f"({', '.join(parts)}),")
        out.append("]")
        if sample_rows and sample_rows.get(t.name):
            out.append(f"rows: {format_rows(sample_rows[t.name])}")
    fks = [fk for fk in schema.foreign_keys
           if fk.table.lower() in keep and fk.ref_table.lower() in keep]
    if fks:
        out.append("【Foreign keys】")
        out += [f"{fk.table}.{fk.column}={fk.ref_table}.{fk.ref_column}" for fk in fks]
    return "\n".join(out)
