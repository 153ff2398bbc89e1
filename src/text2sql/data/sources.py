"""Dataset loaders: every source yields the same normalized :class:`Example` stream.

Sources (``prepare.source``):

- ``spider``: ``train_spider.json`` (+ ``train_others.json``), ``dev.json``,
  ``tables.json``, ``database/<db_id>/<db_id>.sqlite``.
- ``bird``: ``<split>.json`` (or ``<split>/<split>.json``) with ``question``,
  ``SQL``, ``db_id``, ``evidence``; ``<split>_tables.json``;
  ``<split>_databases/<db_id>/<db_id>.sqlite``.
- ``jsonl``: one JSON object per line, either ``question``/``query``/``db_id``
  or the seed's ``instruction``/``output`` plus ``db_id``; ``path`` is one file
  (one split) or a folder of ``<split>.jsonl`` files. Read line by line, never whole.
- ``hf``: a Hugging Face dataset id or local path, through ``datasets.load_dataset``
  (or ``load_from_disk`` for a folder written by ``save_to_disk``).
- ``sparc``: multi-turn conversations in SParC's layout (``<split>.json``) or CoSQL's
  (``cosql_<split>.json``, also under ``sql_state_tracking/``): a list of
  ``{database_id, interaction: [{utterance, query}], final}``; ``tables.json``,
  ``database/<db_id>/<db_id>.sqlite``. One example per turn, its earlier turns as history.
  A JSONL line may carry a ``history`` list of earlier ``{question, query}`` turns too.
- ``synsql``: OmniSQL's SynSQL-2.5M layout: ``data.json`` (or ``<split>.json``), one JSON
  array of ``{db_id, question, sql, external_knowledge, cot, ...}``, read one example at a
  time; ``tables.json``; ``databases/<db_id>/<db_id>.sqlite``.

With ``prepare.answer: reasoning`` every example needs a chain of thought: the ``cot``
field (``prepare.columns.cot`` for JSONL and HF; OmniSQL's ``*_with_cot.json`` files give
Spider and BIRD one). SParC/CoSQL have none.

Schemas come from the layout's tables file when it has one, from ``tables`` when
given, else from the SQLite files in ``db_dir``. A source with one split is split
in two, seeded, holding out whole databases.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from text2sql.io import DataError, iter_json_array, iter_jsonl, read_json
from text2sql.params import ColumnParams
from text2sql.sql.schema import Schema, SqliteSchemas, find_database, load_spider_tables
from text2sql.sql.sqlite import MissingDatabase

REQUIRED = ("question", "query", "db_id")
SOURCES = ("spider", "bird", "jsonl", "hf", "sparc", "synsql")


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation: what was asked and the SQL that answered it."""

    question: str
    query: str


@dataclass(frozen=True)
class Example:
    id: str
    db_id: str
    question: str
    query: str
    db_path: str | None = None  # the SQLite file, when the source has one
    evidence: str | None = None
    history: tuple[Turn, ...] = ()  # earlier turns of its conversation, oldest first
    conversation: str | None = None  # the conversation it belongs to (multi-turn sources)
    turn: int | None = None  # its 0-based position there (= len(history))
    bird_difficulty: str | None = None  # BIRD's own level: simple | moderate | challenging
    bird_sha256: str | None = None  # sha256 of the BIRD split file it comes from (its version)
    reasoning: str | None = None  # its chain of thought (read with prepare.answer: reasoning)


@dataclass(frozen=True)
class BadConversation:
    """A conversation (or JSONL line) left out for bad input, and where the problem is."""

    where: str  # the file (and line, for JSONL)
    conversation: str  # the conversation's index in the file (its id for JSONL)
    turn: int | None  # the bad turn's index, None when the conversation as a whole is bad
    reason: str  # missing_query | missing_question | unknown_database | bad_interaction
    detail: str
    turns: int  # examples lost with it
    db_id: str = ""

    def message(self) -> str:
        at = f", turn {self.turn}" if self.turn is not None else ""
        return (f"{self.where}: conversation {self.conversation}{at}: {self.reason}"
                + (f" ({self.detail})" if self.detail else "")
                + f"; dropped with its {self.turns} turn(s)")


class ExampleStream:
    """Examples read afresh from their source on every iteration (nothing held in memory)."""

    def __init__(self, read: Callable[[], Iterator[Example]]):
        self._read = read

    def __iter__(self) -> Iterator[Example]:
        return self._read()

    def where(self, keep: Callable[[Example], bool]) -> ExampleStream:
        return ExampleStream(lambda: (e for e in self._read() if keep(e)))


@dataclass
class Dataset:
    """The examples of one split and the schemas they refer to.

    ``examples`` is a list, or an :class:`ExampleStream` for sources read line
    by line; both can be iterated more than once.
    """

    examples: list[Example] | ExampleStream
    schemas: Mapping[str, Schema] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, db_id): no SQLite file
    # Conversations left out for bad input (multi-turn sources; a stream refills it as it is read)
    bad: list[BadConversation] = field(default_factory=list)


# ------------------------------------------------------------------ databases


class Databases:
    """Schemas and SQLite files of a source's databases, checked with messages that name both.

    The one place a ``db_id`` becomes a SQLite file (for ``prepare``, ``evaluate``,
    ``predict`` and the benches). ``setting`` names what the user sets to fix a miss
    (``prepare.db_dir``, ``--db``). With ``skip_missing``, an example whose database
    file is missing is left out of a Spider/BIRD split and listed in ``skipped``
    (real releases get trimmed); without it (the default) it is an error.
    """

    def __init__(self, schemas: Mapping[str, Schema], db_dir: Path | None, schema_file: str,
                 setting: str = "prepare.tables / prepare.db_dir", skip_missing: bool = False):
        self.schemas = schemas
        self.db_dir = db_dir
        self.schema_file = schema_file  # where schemas come from, for messages
        self.setting = setting
        self.skip_missing = skip_missing
        self.skipped: list[tuple[str, str]] = []  # (example id, db_id) of each one left out
        self._checked: dict[str, str | None | MissingDatabase] = {}

    def check(self, db_id: str, where: str) -> str | None:
        """The SQLite file of ``db_id`` (or ``None`` without a ``db_dir``); an error if unknown.

        A database whose schema is known but whose file is missing raises
        :class:`MissingDatabase`.
        """
        if db_id not in self._checked:
            try:
                self._checked[db_id] = self._find(db_id, where)
            except MissingDatabase as e:
                self._checked[db_id] = e
        found = self._checked[db_id]
        if isinstance(found, MissingDatabase):
            raise MissingDatabase(f"{where}: {found}")
        return found

    def _find(self, db_id: str, where: str) -> str | None:
        if not db_id:
            raise DataError(f"{where}: empty db_id")
        path = find_database(self.db_dir, db_id) if self.db_dir is not None else None
        looked = (f"SQLite file {self.db_dir / db_id / (db_id + '.sqlite')} not found (nor "
                  f"{self.db_dir / (db_id + '.sqlite')})") if self.db_dir is not None else ""
        if db_id not in self.schemas:
            also = f", and {looked}" if self.db_dir is not None and path is None else ""
            raise DataError(f"{where}: unknown db_id {db_id!r}: it is not in {self.schema_file}"
                            f"{also} (check the db_id, or {self.setting})")
        self.schemas[db_id]  # a schema read from SQLite is read now, once, not mid-prompt
        if self.db_dir is None:
            return None
        if path is None:
            raise MissingDatabase(f"db_id {db_id!r}: {looked}; check {self.setting}")
        return str(path)


def open_databases(tables: str | Path | None, db_dir: str | Path | None,
                   default_tables: Path | None = None, default_db_dir: Path | None = None, *,
                   setting: str = "prepare.tables / prepare.db_dir",
                   skip_missing: bool = False) -> Databases:
    """Schemas from a tables file (``tables``, else ``default_tables`` if it exists), else SQLite.

    ``db_dir`` (given by the user: it must exist) or ``default_db_dir`` (the
    layout's own) holds the SQLite files. Raises a ``DataError`` when there is
    neither a tables file nor a database folder.
    """
    if db_dir is not None and not Path(db_dir).is_dir():
        raise DataError(f"{db_dir}: database folder not found (prepare.db_dir)")
    db_path = Path(db_dir) if db_dir is not None else default_db_dir
    tables_path = Path(tables) if tables is not None else None
    if tables_path is None and default_tables is not None and default_tables.is_file():
        tables_path = default_tables
    if tables_path is not None:
        return Databases(load_spider_tables(tables_path), db_path, str(tables_path), setting,
                         skip_missing)
    if db_path is None or not db_path.is_dir():
        raise DataError(f"no schemas: no tables file{f' ({default_tables})' if default_tables else ''}"
                        " and no database folder"
                        f"{f' ({default_db_dir})' if default_db_dir else ''}: give prepare.tables "
                        "(a tables.json) or prepare.db_dir (a folder of <db_id>/<db_id>.sqlite "
                        "or <db_id>.sqlite files)")
    return Databases(SqliteSchemas(db_path), db_path, f"{db_path} (no such SQLite file)", setting,
                     skip_missing)


def _text(row: Mapping[str, Any], key: str, where: str, needs: str, *fallbacks: str) -> str:
    for k in (key, *fallbacks):
        if k in row and row[k] is not None:
            value = row[k]
            if not isinstance(value, str):
                raise DataError(f"{where}: field {k!r} must be a string, got {type(value).__name__}")
            return value
    alt = "".join(f" (or {f!r})" for f in fallbacks)
    raise DataError(f"{where}: missing field {key!r}{alt} ({needs})")


def _fields(row: Any, cols: ColumnParams, where: str, needs: str) -> tuple[str, str, str]:
    """The question, query and db_id of one example (a JSON object); an error names the field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return (_text(row, cols.question, where, needs), _text(row, cols.query, where, needs),
            _text(row, cols.db_id, where, needs))


def _optional_text(row: Mapping[str, Any], key: str | None) -> str | None:
    value = row.get(key) if key else None
    return value if isinstance(value, str) and value.strip() else None


def _reasoning(row: Mapping[str, Any], cols: ColumnParams, where: str, source: str,
               wanted: bool) -> str | None:
    """The example's chain of thought when ``prepare.answer`` is reasoning (else ``None``)."""
    if not wanted:
        return None
    text = _optional_text(row, cols.cot)
    if text is None:
        raise DataError(f"{where}: prepare.answer is reasoning, but this {source} example has "
                        f"no chain of thought (field {cols.cot!r}); give every example one "
                        "(prepare.columns.cot names the field), or set prepare.answer: sql")
    return text


# --------------------------------------------------------------- Spider, BIRD

SPIDER_SPLIT_FILES = {"train": ["train_spider.json", "train_others.json"], "dev": ["dev.json"]}


def _spider_files(root: Path, split: str) -> list[Path]:
    names = SPIDER_SPLIT_FILES.get(split, [f"{split}.json"])
    return [root / n for n in names if (root / n).is_file()]


def _json_examples(files: list[Path], split: str, dbs: Databases, cols: ColumnParams,
                   needs: str, source: str, reasoning: bool = False) -> list[Example]:
    examples = []
    position = 0  # ids count skipped examples too: an id names the same example either way
    for f in files:
        data = read_json(f)
        if not isinstance(data, list):
            raise DataError(f"{f}: expected a JSON list of examples")
        for i, row in enumerate(data):
            where = f"{f}: example {i}"
            question, query, db_id = _fields(row, cols, where, needs)
            example_id = f"{split}-{position:05d}"
            position += 1
            try:
                db_path = dbs.check(db_id, where)
            except MissingDatabase:
                if not dbs.skip_missing:
                    raise
                dbs.skipped.append((example_id, db_id))
                continue
            examples.append(Example(example_id, db_id, question, query, db_path,
                                    _optional_text(row, cols.evidence),
                                    reasoning=_reasoning(row, cols, where, source, reasoning)))
    return examples


def _dataset_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (prepare.path)")
    return root


def load_spider_split(root: str | Path, split: str, *, tables: str | Path | None = None,
                      db_dir: str | Path | None = None, skip_missing: bool = False,
                      reasoning: bool = False) -> Dataset | None:
    """One split of a Spider-layout folder, or ``None`` when the split has no file.

    ``tables`` and ``db_dir`` replace ``<root>/tables.json`` and ``<root>/database``;
    without any tables file the schemas are read from the SQLite files. With
    ``skip_missing``, examples whose SQLite file is missing are left out and listed
    in the dataset's ``skipped``.
    """
    root = _dataset_root(root)
    files = _spider_files(root, split)
    if not files:
        return None
    dbs = open_databases(tables, db_dir, root / "tables.json", root / "database",
                         skip_missing=skip_missing)
    needs = "every example needs question, query, db_id"
    return Dataset(_json_examples(files, split, dbs, ColumnParams(), needs, "spider", reasoning),
                   dbs.schemas, dbs.skipped)


def _bird_split_dir(root: Path, split: str) -> Path | None:
    for d in (root, root / split):
        if (d / f"{split}.json").is_file():
            return d
    return None


def load_bird_split(root: str | Path, split: str, *, tables: str | Path | None = None,
                    db_dir: str | Path | None = None, skip_missing: bool = False,
                    reasoning: bool = False) -> Dataset | None:
    """One split of a BIRD-layout folder (``<split>.json`` or ``<split>/<split>.json``), or ``None``."""
    root = _dataset_root(root)
    d = _bird_split_dir(root, split)
    if d is None:
        return None
    dbs = open_databases(tables, db_dir, d / f"{split}_tables.json", d / f"{split}_databases",
                         skip_missing=skip_missing)
    cols = ColumnParams(query="SQL")
    needs = "every BIRD example needs question, SQL, db_id"
    path = d / f"{split}.json"
    examples = _json_examples([path], split, dbs, cols, needs, "bird", reasoning)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    levels = [row.get("difficulty") if isinstance(row, dict) else None for row in read_json(path)]
    examples = [replace(e, bird_sha256=digest,
                        bird_difficulty=_bird_level(levels[int(e.id.rsplit("-", 1)[1])]))
                for e in examples]
    return Dataset(examples, dbs.schemas, dbs.skipped)


def _bird_level(value: Any) -> str | None:
    return value if value in ("simple", "moderate", "challenging") else None


# ---------------------------------------------------------------------- JSONL




def iter_jsonl_examples(path: str | Path, dbs: Databases, cols: ColumnParams = ColumnParams(),
                        id_prefix: str | None = None, bad: list[BadConversation] | None = None,
                        reasoning: bool = False) -> Iterator[Example]:
    """Examples of a JSONL file, one line at a time.

    A line has ``question``/``query``/``db_id`` (names per ``cols``) or the seed's
    ``instruction``/``output`` plus ``db_id``. An optional ``history`` lists the
    earlier turns (``{question, query}``, oldest first) and ``conversation`` names the
    conversation the line belongs to (default: the line itself). A line whose history
    holds a bad turn is left out and listed in ``bad`` (cleared when reading starts).
    """
    path = Path(path)
    prefix = id_prefix or path.stem
    needs = (f"every line needs {cols.question} (or instruction), {cols.query} (or output), "
             f"{cols.db_id}")
    if bad is not None:
        bad.clear()
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        question = _text(row, cols.question, where, needs, "instruction")
        query = _text(row, cols.query, where, needs, "output")
        db_id = _text(row, cols.db_id, where, needs)
        db_path = dbs.check(db_id, where)
        example_id = f"{prefix}-{lineno:05d}"
        cot = _reasoning(row, cols, where, "jsonl", reasoning)
        if "history" not in row:
            yield Example(example_id, db_id, question, query, db_path,
                          _optional_text(row, cols.evidence), reasoning=cot)
            continue
        conversation = str(row.get("conversation", example_id))
        turns, problem = _history_turns(row["history"])
        if problem is not None:
            turn, reason, detail = problem
            found = BadConversation(where, conversation, turn, reason, detail, 1, db_id)
            if bad is None:
                raise DataError(found.message())
            bad.append(found)
            continue
        yield Example(example_id, db_id, question, query, db_path,
                      _optional_text(row, cols.evidence), turns, conversation, len(turns), cot)


def _history_turns(history: Any) -> tuple[tuple[Turn, ...], tuple[int | None, str, str] | None]:
    """A JSONL line's ``history`` as turns, or (turn index, reason, detail) of its first problem."""
    if not isinstance(history, list):
        return (), (None, "bad_interaction",
                    f"history must be a list, got {type(history).__name__}")
    turns = []
    for i, turn in enumerate(history):
        if not isinstance(turn, dict):
            return (), (i, "bad_interaction",
                        f"a turn must be an object, got {type(turn).__name__}")
        question, query = turn.get("question"), turn.get("query")
        if not isinstance(question, str) or not question.strip():
            return (), (i, "missing_question", "no question text")
        if not isinstance(query, str) or not query.strip():
            return (), (i, "missing_query", "no SQL query")
        turns.append(Turn(question, query))
    return tuple(turns), None


def load_jsonl_split(path: str | Path, split: str, dbs: Databases,
                     cols: ColumnParams = ColumnParams(), reasoning: bool = False
                     ) -> Dataset | None:
    """``<path>/<split>.jsonl`` as a stream, or ``None`` when there is no such file.

    A ``path`` that is itself a file is the whole dataset, read as this split.
    """
    path = Path(path)
    if path.is_file():
        f = path
    elif path.is_dir():
        f = path / f"{split}.jsonl"
        if not f.is_file():
            return None
    else:
        raise DataError(f"{path}: JSONL file or folder not found (prepare.path)")
    bad: list[BadConversation] = []
    return Dataset(ExampleStream(lambda: iter_jsonl_examples(f, dbs, cols, split, bad,
                                                             reasoning)), dbs.schemas, bad=bad)


# ----------------------------------------------------------- SParC, CoSQL


def _sparc_file(root: Path, split: str) -> Path | None:
    """SParC's ``<split>.json``, or CoSQL's ``cosql_<split>.json`` (also under
    ``sql_state_tracking/``)."""
    for f in (root / f"{split}.json", root / f"cosql_{split}.json",
              root / "sql_state_tracking" / f"cosql_{split}.json"):
        if f.is_file():
            return f
    return None


def conversation_examples(conversations: Any, f: Path, split: str, dbs: Databases,
                          bad: list[BadConversation]) -> list[Example]:
    """One example per turn of every well-formed conversation; the others go to ``bad``.

    A conversation with an unknown database or a turn without an utterance or a query is
    left out whole: its later turns would lean on the missing one. Ids are
    ``<split>-<conversation:05d>-<turn:02d>`` with the conversation's index in the file.
    """
    if not isinstance(conversations, list):
        raise DataError(f"{f}: expected a JSON list of conversations "
                        "({database_id, interaction: [{utterance, query}]})")
    examples = []
    for ci, conv in enumerate(conversations):
        if not isinstance(conv, dict):
            raise DataError(f"{f}: conversation {ci}: expected a JSON object, "
                            f"got {type(conv).__name__}")
        interaction = conv.get("interaction")
        n = len(interaction) if isinstance(interaction, list) else 0
        db_id = conv.get("database_id")

        def drop(turn: int | None, reason: str, detail: str) -> None:
            bad.append(BadConversation(str(f), str(ci), turn, reason, detail, n,
                                       db_id if isinstance(db_id, str) else ""))

        if not isinstance(interaction, list) or not interaction:
            drop(None, "bad_interaction", "no interaction list of {utterance, query} turns")
            continue
        if not isinstance(db_id, str):
            drop(None, "unknown_database", "no database_id")
            continue
        where = f"{f}: conversation {ci}"
        try:
            db_path = dbs.check(db_id, where)
        except DataError as e:  # an unknown db_id, or its SQLite file missing
            drop(None, "unknown_database", str(e).removeprefix(f"{where}: "))
            continue
        turns: list[Turn] = []
        for ti, turn in enumerate(interaction):
            question = turn.get("utterance") if isinstance(turn, dict) else None
            query = turn.get("query") if isinstance(turn, dict) else None
            if not isinstance(question, str) or not question.strip():
                drop(ti, "missing_question", "no utterance")
                break
            if not isinstance(query, str) or not query.strip():
                drop(ti, "missing_query", "no SQL query")
                break
            turns.append(Turn(question, query))
        else:
            conversation = f"{split}-{ci:05d}"
            examples += [Example(f"{conversation}-{ti:02d}", db_id, t.question, t.query, db_path,
                                 None, tuple(turns[:ti]), conversation, ti)
                         for ti, t in enumerate(turns)]
    return examples


def load_sparc_split(root: str | Path, split: str, *, tables: str | Path | None = None,
                     db_dir: str | Path | None = None) -> Dataset | None:
    """One split of a SParC- or CoSQL-layout folder, or ``None`` when the split has no file."""
    root = _dataset_root(root)
    f = _sparc_file(root, split)
    if f is None:
        return None
    dbs = open_databases(tables, db_dir, root / "tables.json", root / "database")
    bad: list[BadConversation] = []
    return Dataset(conversation_examples(read_json(f), f, split, dbs, bad), dbs.schemas, bad=bad)


# ----------------------------------------------------------- SynSQL (OmniSQL)

SYNSQL_TRAIN_FILE = "data.json"  # SynSQL-2.5M's one file of examples
SYNSQL_COLUMNS = ColumnParams(query="sql", evidence="external_knowledge")


def _synsql_file(path: Path, split: str, train_split: str) -> Path | None:
    """``<split>.json`` in the folder, or (for the training split) ``data.json``; a
    ``path`` that is itself a file is the training split."""
    if path.is_file():
        return path if split == train_split else None
    names = [f"{split}.json"] + ([SYNSQL_TRAIN_FILE] if split == train_split else [])
    return next((path / n for n in names if (path / n).is_file()), None)


def iter_synsql_examples(f: Path, split: str, dbs: Databases, reasoning: bool = False
                         ) -> Iterator[Example]:
    """The examples of a SynSQL-layout JSON array, one at a time (never the whole file).

    Ids are ``<split>-<index:07d>``, the example's position in the file. Errors name the
    file, the line where the example starts and the field.
    """
    cols = SYNSQL_COLUMNS
    needs = "every SynSQL example needs question, sql, db_id"
    for i, lineno, row in iter_json_array(f):
        where = f"{f}:{lineno}: example {i}"
        question, query, db_id = _fields(row, cols, where, needs)
        yield Example(f"{split}-{i:07d}", db_id, question, query, dbs.check(db_id, where),
                      _optional_text(row, cols.evidence),
                      reasoning=_reasoning(row, cols, where, "synsql", reasoning))


def load_synsql_split(path: str | Path, split: str, train_split: str = "train", *,
                      tables: str | Path | None = None, db_dir: str | Path | None = None,
                      reasoning: bool = False) -> Dataset | None:
    """One split of a SynSQL-layout folder as a stream, or ``None`` when it has no file.

    The folder (or the folder of ``path``, when it is the JSON file) holds ``tables.json``
    and ``databases/``; ``tables`` and ``db_dir`` replace them.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: SynSQL folder or JSON file not found (prepare.path)")
    f = _synsql_file(path, split, train_split)
    if f is None:
        return None
    root = f.parent
    dbs = open_databases(tables, db_dir, root / "tables.json", root / "databases")
    return Dataset(ExampleStream(lambda: iter_synsql_examples(f, split, dbs, reasoning)),
                   dbs.schemas)


# ------------------------------------------------------------ Hugging Face


def download_hub_dataset(hub_id: str, revision: str | None) -> Path:
    """The local snapshot of hub dataset ``hub_id`` at ``revision`` (a tag, branch or commit),
    downloaded once into the Hugging Face cache (``HF_HUB_CACHE``; offline with
    ``HF_HUB_OFFLINE=1`` when the revision is cached)."""
    if not revision:
        raise DataError(f"prepare.hub {hub_id!r}: give prepare.revision (a tag, branch or commit "
                        "of the dataset) so that a rerun reads the same data and DVC sees a change")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(hub_id, repo_type="dataset", revision=revision))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as e:
        raise DataError(f"prepare.hub {hub_id!r} at revision {revision!r}: cannot get it from "
                        f"the Hugging Face hub ({type(e).__name__}: {e})") from None


def _load_hf(path: str, config: str | None) -> Any:
    import datasets  # heavy (pyarrow, pandas): only for this source

    local = Path(path)
    if local.is_dir() and ((local / "dataset_dict.json").is_file()
                           or (local / "state.json").is_file()):
        return datasets.load_from_disk(str(local))
    try:
        return datasets.load_dataset(path, config)
    except FileNotFoundError as e:
        raise DataError(f"{path}: Hugging Face dataset not found (prepare.path): {e}") from None


def load_hf_split(data: Any, path: str, split: str, dbs: Databases,
                  cols: ColumnParams = ColumnParams(), reasoning: bool = False
                  ) -> Dataset | None:
    """One split of a loaded Hugging Face ``DatasetDict`` (``None`` when it has no such split)."""
    import datasets

    if isinstance(data, datasets.Dataset):
        if split != "train":
            return None
        table = data
    elif split in data:
        table = data[split]
    else:
        return None
    needed = [cols.question, cols.query, cols.db_id]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(f"{path} [{split}]: missing column(s) {missing} (have {table.column_names}); "
                        "map them with prepare.columns.question / .query / .db_id")

    def read() -> Iterator[Example]:
        needs = f"every row needs {', '.join(needed)}"
        for i, row in enumerate(table):
            where = f"{path} [{split}] row {i}"
            question, query, db_id = _fields(row, cols, where, needs)
            yield Example(f"{split}-{i:05d}", db_id, question, query, dbs.check(db_id, where),
                          _optional_text(row, cols.evidence),
                          reasoning=_reasoning(row, cols, where, "hf", reasoning))

    return Dataset(ExampleStream(read), dbs.schemas)


# ------------------------------------------------------------------- splits


def split_off(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split one dataset in two, seeded, holding out whole databases.

    Holding out databases (as Spider's own dev split does) keeps any question of
    the evaluation split from having a near-twin in training. A stream is read
    once here for its database ids, and stays a stream.
    """
    db_ids = sorted({e.db_id for e in dataset.examples})
    random.Random(seed).shuffle(db_ids)
    n_eval = max(1, round(len(db_ids) * fraction)) if fraction > 0 else 0
    held = set(db_ids[:n_eval])
    # Bad conversations are reported once, with the training split that read them.
    if isinstance(dataset.examples, ExampleStream):
        return (Dataset(dataset.examples.where(lambda e: e.db_id not in held), dataset.schemas,
                        bad=dataset.bad),
                Dataset(dataset.examples.where(lambda e: e.db_id in held), dataset.schemas))
    train = [e for e in dataset.examples if e.db_id not in held]
    evals = [e for e in dataset.examples if e.db_id in held]
    return Dataset(train, dataset.schemas, bad=dataset.bad), Dataset(evals, dataset.schemas)


def load_dataset_splits(source: str, path: str, train_split: str, eval_split: str,
                        eval_fraction: float, seed: int, *, tables: str | None = None,
                        db_dir: str | None = None, columns: ColumnParams | None = None,
                        hf_config: str | None = None, hub: str | None = None,
                        revision: str | None = None, reasoning: bool = False
                        ) -> tuple[Dataset, Dataset]:
    """Train and evaluation datasets from any supported source.

    When the source has no ``eval_split``, ``eval_fraction`` of the training
    split's databases (chosen with ``seed``) is held out for evaluation. ``hub``
    (source ``hf``) is a hub dataset id read at ``revision``; ``path`` is then the
    local folder of its SQLite databases (the stage's DVC dependency), unless
    ``db_dir`` names another. With ``reasoning`` (``prepare.answer: reasoning``) every
    example's chain of thought is read too, and one without is an error.
    """
    if hub is not None:
        if source != "hf":
            raise DataError(f"prepare.hub {hub!r} needs prepare.source: hf (not {source!r})")
        if db_dir is None:
            db_dir = path
        path = str(download_hub_dataset(hub, revision))
    cols = columns or ColumnParams()
    if source == "spider":
        def load(split: str) -> Dataset | None:
            return load_spider_split(path, split, tables=tables, db_dir=db_dir,
                                     reasoning=reasoning)
        looked_for = ", ".join(SPIDER_SPLIT_FILES.get(train_split, [train_split + ".json"]))
    elif source == "bird":
        def load(split: str) -> Dataset | None:
            return load_bird_split(path, split, tables=tables, db_dir=db_dir,
                                   reasoning=reasoning)
        looked_for = f"{train_split}.json or {train_split}/{train_split}.json"
    elif source == "sparc":
        if reasoning:
            raise DataError("prepare.answer is reasoning, but source sparc (SParC/CoSQL) has no "
                            "chain of thought: set prepare.answer: sql")

        def load(split: str) -> Dataset | None:
            return load_sparc_split(path, split, tables=tables, db_dir=db_dir)
        looked_for = (f"{train_split}.json, cosql_{train_split}.json or "
                      f"sql_state_tracking/cosql_{train_split}.json")
    elif source == "jsonl":
        dbs = open_databases(tables, db_dir)

        def load(split: str) -> Dataset | None:
            if Path(path).is_file() and split != train_split:
                return None  # one file holds one split: the training one
            return load_jsonl_split(path, split, dbs, cols, reasoning)
        looked_for = f"{train_split}.jsonl in the folder"
    elif source == "hf":
        dbs = open_databases(tables, db_dir)
        data = _load_hf(path, hf_config)

        def load(split: str) -> Dataset | None:
            return load_hf_split(data, path, split, dbs, cols, reasoning)
        looked_for = f"a split named {train_split!r} (have {list(getattr(data, 'keys', list)())})"
    elif source == "synsql":
        def load(split: str) -> Dataset | None:
            return load_synsql_split(path, split, train_split, tables=tables, db_dir=db_dir,
                                     reasoning=reasoning)
        looked_for = f"{train_split}.json or {SYNSQL_TRAIN_FILE}"
    else:
        raise DataError(f"prepare.source: {source!r} is not one of {', '.join(SOURCES)}")
    train = load(train_split)
    if train is None:
        raise DataError(f"{path}: no data for split {train_split!r} (looked for {looked_for}; "
                        "check prepare.path and prepare.train_split)")
    evals = load(eval_split) if eval_split != train_split else None
    if evals is None:
        if eval_fraction <= 0:
            raise DataError(f"{path}: no {eval_split!r} split and prepare.eval_fraction is 0: "
                            "set prepare.eval_fraction > 0 to hold out databases for evaluation")
        return split_off(train, eval_fraction, seed)
    return train, evals


def iter_examples(dataset: Dataset) -> Iterator[Example]:
    yield from dataset.examples


def db_ids(examples: Iterable[Example]) -> set[str]:
    """The databases some example refers to."""
    return {e.db_id for e in examples}
