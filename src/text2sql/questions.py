"""Questions from outside the pipeline (``ask``, ``predict``) turned into prompts.

A prompt for a new question is made by the prepare stage's own prompt maker
(:func:`text2sql.prompts.make_prompt`), with the ``prepare:`` settings of
``params.yaml``, so a trained adapter sees the same kind of prompt it was trained
on: the schema read from the SQLite file, linked to the question, as DDL.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.params import PrepareParams, load_params
from text2sql.schema import Schema, load_spider_tables, schema_from_sqlite

SQLITE_SUFFIXES = (".sqlite", ".db", ".sqlite3")


def prepare_settings(params_file: str | Path | None) -> PrepareParams:
    """The ``prepare:`` section of ``params_file`` when it exists, else the defaults."""
    if params_file is not None and Path(params_file).is_file():
        return load_params("prepare", params_file)  # type: ignore[return-value]
    return PrepareParams()


def prompt_row(question: str, db_path: str | Path, schema: Schema, settings: PrepareParams, *,
               example_id: str = "question", evidence: str | None = None) -> dict[str, Any]:
    """A prepared row (id, db_id, db_path, question, tables, prompt) for one question,
    built by the prepare stage's own prompt maker with its ``prepare:`` settings."""
    from text2sql.prepare import prompt_options
    from text2sql.prompts import make_prompt

    linked = make_prompt(question, schema, str(db_path), evidence, prompt_options(settings))
    row: dict[str, Any] = {"id": example_id, "db_id": schema.db_id, "db_path": str(db_path),
                           "question": question, "tables": linked.tables,
                           "prompt": linked.messages}
    if evidence:
        row["evidence"] = evidence
    return row


def read_schema(path: str | Path, db_id: str | None = None) -> Schema:
    """The schema of a SQLite file; a file that is not a database is a clear error."""
    import sqlite3

    try:
        return schema_from_sqlite(path, db_id)
    except sqlite3.DatabaseError as e:
        raise DataError(f"{path}: cannot read it as a SQLite database ({e})") from None


def find_sqlite(db_dir: Path, db_id: str) -> Path | None:
    """``<db_dir>/<db_id>/<db_id>.sqlite`` (Spider layout) or ``<db_dir>/<db_id>.sqlite``."""
    for suffix in SQLITE_SUFFIXES:
        for candidate in (db_dir / db_id / f"{db_id}{suffix}", db_dir / f"{db_id}{suffix}"):
            if candidate.is_file():
                return candidate
    return None


class Databases:
    """Where each question's database is: one SQLite file for all, or a folder of them.

    A folder may be Spider's ``database/`` folder or the dataset root holding it;
    when a ``tables.json`` sits in the root, schemas come from it (as in the prepare
    stage), otherwise from the SQLite files themselves.
    """

    def __init__(self, db: str | Path):
        self.path = Path(db)
        self._schemas: dict[str, Schema] = {}
        self._tables_json: dict[str, Schema] = {}
        if self.path.is_file():
            self.folder = None
        elif self.path.is_dir():
            self.folder = self.path / "database" if (self.path / "database").is_dir() else self.path
            for tables in (self.folder / "tables.json", self.folder.parent / "tables.json"):
                if tables.is_file():
                    self._tables_json = load_spider_tables(tables)
                    break
        else:
            raise DataError(f"{self.path}: no such SQLite file or folder (--db)")

    def locate(self, db_id: str | None) -> tuple[str, Path]:
        """``(db_id, SQLite file)`` for a question's ``db_id`` (may be None with one file)."""
        if self.folder is None:
            return db_id or self.path.stem, self.path
        if not db_id:
            raise DataError(f"--db {self.path} is a folder, so every question needs a db_id")
        found = find_sqlite(self.folder, db_id)
        if found is None:
            raise DataError(f"db_id {db_id!r}: no {self.folder}/{db_id}/{db_id}.sqlite "
                            f"(nor {self.folder}/{db_id}.sqlite)")
        return db_id, found

    def schema(self, db_id: str, path: Path) -> Schema:
        if db_id not in self._schemas:
            self._schemas[db_id] = (self._tables_json.get(db_id) if self.folder is not None else None) \
                or read_schema(path, db_id)
        return self._schemas[db_id]


def rows_from_questions(numbered: Iterable[tuple[int, dict[str, Any]]], source: str | Path,
                        db: str | Path | None, settings: PrepareParams
                        ) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, prepared row)`` for a JSONL file of questions (``question``, ``db_id``; optional
    ``id``, ``evidence``, ``db_path``). Rows that already carry a ``prompt`` (the
    prepare stage's output) are kept as they are."""
    databases = Databases(db) if db is not None else None
    rows = []
    for lineno, obj in numbered:
        where = f"{source}:{lineno}"
        question = obj.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: missing field 'question' (each line needs a question, and a "
                            "db_id unless --db names one SQLite file)")
        example_id = str(obj.get("id", f"line-{lineno}"))
        if "prompt" in obj and databases is None:
            rows.append((lineno, {**obj, "id": example_id}))
            continue
        db_id = obj.get("db_id")
        if db_id is not None and not isinstance(db_id, str):
            raise DataError(f"{where}: field 'db_id' must be a string, got {db_id!r}")
        try:
            if databases is not None:
                db_id, path = databases.locate(db_id)
                schema = databases.schema(db_id, path)
            elif obj.get("db_path"):
                path = Path(obj["db_path"])
                schema = read_schema(path, db_id or path.stem)
            else:
                raise DataError("no database: give --db (one SQLite file, or a folder of "
                                "Spider-style databases), or a db_path on each line")
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        row = prompt_row(question, path, schema, settings, example_id=example_id,
                         evidence=obj.get("evidence"))
        rows.append((lineno, row))
    if not rows:
        raise DataError(f"{source}: no questions (one JSON object per line)")
    return rows
