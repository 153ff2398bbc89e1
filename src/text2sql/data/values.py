"""Stored values: which text values of a database a question mentions, and sample rows.

A question often names a value rather than a table ("orders of Quinn Falk"):
the table holding ``'Quinn Falk'`` is needed although no word of the question
names it. :class:`ValueIndex` reads the distinct short text values of every
column once per database and finds the ones a question mentions, comparing
stemmed words so "Rakes" finds ``'Rake'``. :meth:`ValueIndex.retrieve` also finds the values a
question spells otherwise (``prepare.value_retrieval: fuzzy``, :mod:`text2sql.data.retrieval`).

Bytes that are not valid UTF-8 are read with replacement characters (see
``execution.open_readonly``), never an error.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from text2sql.data.linking import STOPWORD_STEMS, schema_words, stem
from text2sql.sql.schema import Schema, quote_identifier, schema_from_sqlite
from text2sql.sql.sqlite import open_readonly

if TYPE_CHECKING:
    from text2sql.data.retrieval import ValueRetriever

# Values longer than this are descriptions or free text that a question quotes
# only in part; indexing them whole would not match and costs memory.
MAX_VALUE_CHARS = 60
MAX_VALUE_WORDS = 6
# Distinct values read per column at most: bounds the index of a big database.
MAX_VALUES_PER_COLUMN = 20000
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


class LiveDatabase(Protocol):
    """A database behind a server that reads its own values (:mod:`text2sql.sql.postgres`)."""

    def value_index(self) -> ValueIndex: ...

    def sample_rows(self, table: str, n: int) -> list[tuple]: ...


@dataclass(frozen=True)
class ValueMatch:
    """A stored value the question mentions: where it is and how it is spelled."""

    table: str
    column: str
    value: str
    words: int  # words matched; longer matches are stronger evidence
    score: float = 1.0  # how sure a fuzzy match is (0-1); an exact match is 1


def value_key(text: str) -> tuple[str, ...]:
    """Stemmed, lower-cased words of ``text``: the form values and questions are compared in."""
    return tuple(stem(w.lower()) for w in _TOKEN.findall(text))


def _usable(key: tuple[str, ...], schema_vocab: frozenset[str]) -> bool:
    """Whether a value's words are specific enough to count as a mention when they occur.

    Stopwords, numbers and one-word values that are also words of the schema's
    names ("student" as a value of a ``role`` column) would match almost any
    question about the database.
    """
    if not key or len(key) > MAX_VALUE_WORDS:
        return False
    content = [w for w in key if w not in STOPWORD_STEMS and not w.isdigit()]
    if not content:
        return False
    if len(key) == 1 and (len(key[0]) < 3 or key[0] in schema_vocab):
        return False
    return True


class ValueIndex:
    """The short text values of one database, by their stemmed words (:meth:`match`), and by
    their words for fuzzy retrieval (:meth:`retrieve`, indexed on first use)."""

    def __init__(self, entries: Iterable[tuple[str, str, str]], schema_vocab: Iterable[str] = ()):
        self.schema_vocab = frozenset(schema_vocab)
        self.phrases: dict[tuple[str, ...], list[tuple[str, str, str]]] = {}
        self.columns: dict[tuple[str, str], list[str]] = {}
        self._retriever: ValueRetriever | None = None
        for table, column, value in entries:
            self.columns.setdefault((table, column), []).append(value)
            key = value_key(value)
            if not _usable(key, self.schema_vocab):
                continue
            hits = self.phrases.setdefault(key, [])
            if len(hits) < 50 and (table, column, value) not in hits:
                hits.append((table, column, value))
        self.max_words = max((len(k) for k in self.phrases), default=0)

    @classmethod
    def from_sqlite(cls, db_path: str | Path) -> ValueIndex:
        """Read every column's distinct short text values (``typeof = 'text'``)."""
        schema = schema_from_sqlite(db_path)
        conn = open_readonly(db_path)
        entries: list[tuple[str, str, str]] = []
        try:
            for table in schema.tables:
                for col in table.columns:
                    entries.extend((table.name, col.name, v) for v in _text_values(conn, table.name,
                                                                                    col.name))
        finally:
            conn.close()
        return cls(entries, schema_words(schema))

    def __len__(self) -> int:
        return len(self.phrases)

    def retrieve(self, question: str) -> list[ValueMatch]:
        """The values ``question`` most likely names, spelled as stored or not (typos, other
        word forms, abbreviations): a few per column, best first
        (:class:`text2sql.data.retrieval.ValueRetriever`)."""
        if self._retriever is None:
            from text2sql.data.retrieval import ValueRetriever

            self._retriever = ValueRetriever(self.columns)
        return [ValueMatch(r.table, r.column, r.value, r.words, r.score)
                for r in self._retriever.retrieve(question)]

    def match(self, question: str) -> list[ValueMatch]:
        """Stored values whose words occur, in order, in ``question``; longest first.

        A match inside a longer match (``'Berg'`` inside ``'Quinn Berg'``) is dropped.
        """
        words = value_key(question)
        found: list[tuple[int, int, tuple[str, str, str]]] = []
        for i in range(len(words)):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                for hit in self.phrases.get(words[i:i + n], ()):
                    found.append((i, i + n, hit))
        found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
        taken: list[tuple[int, int]] = []
        out: list[ValueMatch] = []
        for start, end, (table, column, value) in found:
            if any(s <= start and end <= e and (e - s) > (end - start) for s, e in taken):
                continue
            taken.append((start, end))
            m = ValueMatch(table, column, value, end - start)
            if m not in out:
                out.append(m)
        return out


def _text_values(conn: sqlite3.Connection, table: str, column: str) -> list[str]:
    # One-letter values too: fuzzy retrieval matches codes ('F' for "female"); the exact
    # index drops every value that short (``_usable``).
    sql = (f"SELECT DISTINCT {quote_identifier(column)} FROM {quote_identifier(table)} "
           f"WHERE typeof({quote_identifier(column)}) = 'text' "
           f"AND length({quote_identifier(column)}) BETWEEN 1 AND {MAX_VALUE_CHARS} "
           f"LIMIT {MAX_VALUES_PER_COLUMN}")
    try:
        return [r[0] for r in conn.execute(sql) if isinstance(r[0], str)]
    except sqlite3.DatabaseError:
        # A table the schema file names but the database lacks (or a broken view):
        # it simply has no values to offer.
        return []


@lru_cache(maxsize=32)
def _cached_index(db_path: str, mtime_ns: int) -> ValueIndex:
    return ValueIndex.from_sqlite(db_path)


def value_index(db_path: str | Path | LiveDatabase) -> ValueIndex:
    """The value index of a database, built once per file (and again if the file changes);
    a PostgreSQL database keeps its own (``LiveDatabase.value_index``)."""
    if not isinstance(db_path, (str, Path)):
        return db_path.value_index()
    path = Path(db_path).resolve()
    return _cached_index(str(path), path.stat().st_mtime_ns)


# Rows read from a live database (PostgreSQL) to find a table's example values.
EXAMPLE_ROWS = 10


def column_examples(db_path: str | Path | LiveDatabase, schema: Schema, tables: Iterable[str],
                    n: int = 3) -> dict[str, dict[str, list]]:
    """Up to ``n`` distinct stored values of each column of ``tables`` (M-Schema's examples).

    A SQLite file is read once per file (``SELECT DISTINCT ... LIMIT n`` per column); a live
    database gives the distinct values of its first :data:`EXAMPLE_ROWS` rows.
    """
    wanted = {t.lower() for t in tables}
    out: dict[str, dict[str, list]] = {}
    if isinstance(db_path, (str, Path)):
        path = Path(db_path).resolve()
        # Keyed by lower-cased names: a tables.json may spell them unlike the file does.
        stored = _cached_examples(str(path), path.stat().st_mtime_ns, n)
        for table in schema.tables:
            if table.name.lower() in wanted:
                cols = stored.get(table.name.lower(), {})
                out[table.name] = {c.name: cols.get(c.name.lower(), []) for c in table.columns}
        return out
    for table in schema.tables:
        if table.name.lower() in wanted:
            rows = db_path.sample_rows(table.name, EXAMPLE_ROWS)
            out[table.name] = {c.name: list(dict.fromkeys(
                r[i] for r in rows if i < len(r) and r[i] is not None))[:n]
                for i, c in enumerate(table.columns)}
    return out


@lru_cache(maxsize=32)
def _cached_examples(db_path: str, mtime_ns: int, n: int) -> dict[str, dict[str, list]]:
    schema = schema_from_sqlite(db_path)
    conn = open_readonly(db_path)
    out: dict[str, dict[str, list]] = {}
    try:
        for table in schema.tables:
            cols = out.setdefault(table.name.lower(), {})
            for col in table.columns:
                q = quote_identifier(col.name)
                sql = (f"SELECT DISTINCT {q} FROM {quote_identifier(table.name)} "
                       f"WHERE {q} IS NOT NULL AND typeof({q}) != 'blob' LIMIT {int(n)}")
                try:
                    cols[col.name.lower()] = [r[0] for r in conn.execute(sql)]
                except sqlite3.DatabaseError:
                    cols[col.name.lower()] = []  # a table the schema names but the file lacks
    finally:
        conn.close()
    return out


def sample_rows(db_path: str | Path | LiveDatabase, table: str, n: int,
                max_chars: int = 30) -> list[tuple]:
    """The first ``n`` rows of ``table``; long text is cut to ``max_chars`` characters."""
    if n <= 0:
        return []
    if not isinstance(db_path, (str, Path)):
        rows = db_path.sample_rows(table, n)
    else:
        conn = open_readonly(db_path)
        try:
            rows = conn.execute(f"SELECT * FROM {quote_identifier(table)} LIMIT {int(n)}").fetchall()
        except sqlite3.DatabaseError:
            return []
        finally:
            conn.close()
    return [tuple(v[:max_chars] + "…" if isinstance(v, str) and len(v) > max_chars else v
                  for v in row) for row in rows]
