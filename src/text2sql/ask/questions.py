"""Questions from outside the pipeline (``ask``, ``predict``) turned into prompts.

A prompt for a new question is made by the prepare stage's own prompt maker
(:func:`text2sql.data.prompts.make_prompt`), with the ``prepare:`` settings of
``params.yaml``, so a trained adapter sees the same kind of prompt it was trained
on: the schema read from the SQLite file, linked to the question, as DDL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text2sql.io import DataError
from text2sql.params import PrepareParams, load_params
from text2sql.sql.schema import Schema, schema_from_sqlite

if TYPE_CHECKING:
    from text2sql.ask.database import Database
    from text2sql.data.prompts import HistoryTurn
    from text2sql.data.sources import Databases


def prepare_settings(params_file: str | Path | None) -> PrepareParams:
    """The ``prepare:`` section of ``params_file`` when it exists, else the defaults."""
    if params_file is not None and Path(params_file).is_file():
        return load_params("prepare", params_file)  # type: ignore[return-value]
    return PrepareParams()


def prompt_row(question: str, db_path: str | Path | Database, schema: Schema,
               settings: PrepareParams, *, example_id: str = "question",
               evidence: str | None = None,
               history: Sequence[HistoryTurn] = ()) -> dict[str, Any]:
    """A prepared row (id, db_id, db_path, question, tables, prompt) for one question,
    built by the prepare stage's own prompt maker with its ``prepare:`` settings.
    ``db_path``: a SQLite file, or a :class:`~text2sql.ask.database.Database` (``db_path``
    shows its location, a URL's password masked); ``history``: the conversation's earlier
    turns (``text2sql chat``)."""
    from text2sql.data.prepare import prompt_options
    from text2sql.data.prompts import make_prompt

    db = str(db_path) if isinstance(db_path, (str, Path)) else db_path
    linked = make_prompt(question, schema, db, evidence, prompt_options(settings), history)
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


def question_databases(db: str | Path) -> Databases | None:
    """The databases ``--db`` names: ``None`` for one SQLite file (every question asks it),
    else a folder's (Spider's ``database/`` folder or the dataset root holding it; schemas
    from a ``tables.json`` beside it when there is one, as in the prepare stage)."""
    from text2sql.data.sources import open_databases

    path = Path(db)
    if path.is_file():
        return None
    if not path.is_dir():
        raise DataError(f"{path}: no such SQLite file or folder (--db)")
    folder = path / "database" if (path / "database").is_dir() else path
    tables = next((t for t in (folder / "tables.json", folder.parent / "tables.json")
                   if t.is_file()), None)
    return open_databases(tables, folder, setting="--db")


def rows_from_questions(numbered: Iterable[tuple[int, dict[str, Any]]], source: str | Path,
                        db: str | Path | None, settings: PrepareParams
                        ) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, prepared row)`` for a JSONL file of questions (``question``, ``db_id``; optional
    ``id``, ``evidence``, ``db_path``). Rows that already carry a ``prompt`` (the
    prepare stage's output) are kept as they are."""
    databases = question_databases(db) if db is not None else None
    one_file: dict[str, Schema] = {}  # --db names one SQLite file: its schema, read once
    rows = []
    for lineno, obj in numbered:
        where = f"{source}:{lineno}"
        question = obj.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: missing field 'question' (each line needs a question, and a "
                            "db_id unless --db names one SQLite file)")
        example_id = str(obj.get("id", f"line-{lineno}"))
        if "prompt" in obj and db is None:
            rows.append((lineno, {**obj, "id": example_id}))
            continue
        db_id = obj.get("db_id")
        if db_id is not None and not isinstance(db_id, str):
            raise DataError(f"{where}: field 'db_id' must be a string, got {db_id!r}")
        if databases is not None:
            if not db_id:
                raise DataError(f"{where}: --db {db} is a folder, so every question needs a db_id")
            path = Path(databases.check(db_id, where) or "")
            schema = databases.schemas[db_id]
        else:
            path, schema = _one_database(obj, db, db_id, one_file, where)
        row = prompt_row(question, path, schema, settings, example_id=example_id,
                         evidence=obj.get("evidence"))
        rows.append((lineno, row))
    if not rows:
        raise DataError(f"{source}: no questions (one JSON object per line)")
    return rows


def _one_database(obj: dict[str, Any], db: str | Path | None, db_id: str | None,
                  one_file: dict[str, Schema], where: str) -> tuple[Path, Schema]:
    """The SQLite file and schema of a question when ``--db`` is one file, or none at all."""
    try:
        if db is not None:
            path = Path(db)
            db_id = db_id or path.stem
            if db_id not in one_file:
                one_file[db_id] = read_schema(path, db_id)
            return path, one_file[db_id]
        if obj.get("db_path"):
            path = Path(obj["db_path"])
            return path, read_schema(path, db_id or path.stem)
        raise DataError("no database: give --db (one SQLite file, or a folder of "
                        "Spider-style databases), or a db_path on each line")
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
