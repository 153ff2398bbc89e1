"""Schema linking: choose the tables a question needs, then join them along foreign keys.

``link_tables`` matches the question's words against table names, column names
(and their natural-language labels, where the dataset has them) and against the
tables holding values the question mentions (``values.ValueIndex``);
``expand_with_foreign_keys`` adds the tables on the shortest foreign-key paths
between the chosen ones, so every JOIN the answer may need is possible. Neither
looks at the gold SQL: training and inference prompts are linked the same way.

Words are compared as Snowball stems (plural/singular folded), with
snake_case and camelCase split; a word also matches a schema word it starts or
that starts it (``inst`` / ``institution``, ``user`` / ``useracct``), and a
long word matches a near-identical one (a typo), scored by rapidfuzz.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import get_args

import snowballstemmer
from rapidfuzz.distance import Levenshtein

from text2sql.params import FkParents
from text2sql.sql.schema import Schema, Table

_STEMMER = snowballstemmer.stemmer("english")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
# Words too common in questions to count as evidence for a table by themselves.
STOPWORDS = frozenset(
    "a an the of in on at to for by with from and or not is are was were be been has have had do "
    "does did what which who whom whose how many much list show give find name names number count "
    "all each every per their its it that this these those than more most less least there "
    "average total sum max min id ids".split()
)
# Shortest word that may match a longer one it starts (``inst`` -> ``institution``).
MIN_PREFIX = 4
# Words this long or longer may match with a typo (normalized Levenshtein similarity).
MIN_FUZZY_LEN = 6
FUZZY_SIMILARITY = 0.8


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (English) stem of a lower-cased word."""
    return _STEMMER.stemWord(word)


# Stopwords as ``words`` returns them ("many" -> "mani"), and as written.
STOPWORD_STEMS = frozenset(STOPWORDS | {stem(w) for w in STOPWORDS})


_stem = stem  # the name earlier code used


def words(text: str) -> list[str]:
    """Lowercased stems of ``text``, with snake_case and camelCase split into words."""
    text = _CAMEL.sub(" ", text.replace("_", " "))
    return [stem(w.lower()) for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """The stems of ``text`` that are not stopwords."""
    return {w for w in words(text) if w not in STOPWORD_STEMS}


def question_words(text: str) -> set[str]:
    """Content words of a question, plus adjacent pairs written as one (``try out`` -> ``tryout``).

    Schemas often write two words as one (``tryout``, ``gradepoint``,
    ``useracct``); the pairs let a question's two words find them.
    """
    out = content_words(text)
    raw = [w.lower() for w in _WORD.findall(_CAMEL.sub(" ", text.replace("_", " ")))]
    for a, b in zip(raw, raw[1:], strict=False):
        if a.isalpha() and b.isalpha() and a not in STOPWORDS and b not in STOPWORDS:
            out.add(stem(a + b))
    return out


@lru_cache(maxsize=262144)
def words_match(question_word: str, schema_word: str) -> bool:
    """Whether a question stem names a schema stem: equal, a prefix of it, or a typo of it."""
    if question_word == schema_word:
        return True
    if question_word.isdigit() or schema_word.isdigit():
        return False
    short, long_ = sorted((question_word, schema_word), key=len)
    if len(short) >= MIN_PREFIX and long_.startswith(short):
        return True
    return (len(short) >= MIN_FUZZY_LEN
            and Levenshtein.normalized_similarity(question_word, schema_word) >= FUZZY_SIMILARITY)


@dataclass(frozen=True)
class TableTerms:
    """The words that name a table, and those that name its own columns."""

    name: frozenset[str]
    columns: frozenset[str]


def _foreign_key_columns(schema: Schema, table: Table) -> set[str]:
    return {fk.column.lower() for fk in schema.foreign_keys if fk.table.lower() == table.name.lower()}


def table_terms(schema: Schema, table: Table) -> TableTerms:
    """Content words of a table's name and of its columns' names (labels included).

    Foreign-key columns are left out: ``appointments.doctor_id`` says that the
    table points to doctors, not that a question about doctors needs it (the
    foreign-key expansion adds it when a JOIN goes through it).
    """
    name = content_words(table.name) | content_words(table.label or "")
    fk_cols = _foreign_key_columns(schema, table)
    cols: set[str] = set()
    for c in table.columns:
        if c.name.lower() in fk_cols:
            continue
        cols |= content_words(c.name) | content_words(c.label or "")
    return TableTerms(frozenset(name), frozenset(cols - {"id"}))


_TERMS: dict[int, tuple[Schema, list[TableTerms]]] = {}


def _schema_terms(schema: Schema) -> list[TableTerms]:
    """``table_terms`` of every table, computed once per schema object (linking runs per question)."""
    hit = _TERMS.get(id(schema))
    if hit is None or hit[0] is not schema or len(hit[1]) != len(schema.tables):
        if len(_TERMS) > 1024:
            _TERMS.clear()
        hit = (schema, [table_terms(schema, t) for t in schema.tables])
        _TERMS[id(schema)] = hit
    return hit[1]


def schema_words(schema: Schema) -> set[str]:
    """Every content word of the schema's table and column names (labels included)."""
    out: set[str] = set()
    for t in schema.tables:
        out |= content_words(t.name) | content_words(t.label or "")
        for c in t.columns:
            out |= content_words(c.name) | content_words(c.label or "")
    return out


def _mentions(question_words: set[str], terms: frozenset[str]) -> bool:
    return any(words_match(q, s) for q in question_words for s in terms)


def link_tables(
    question: str,
    schema: Schema,
    value_hits: Iterable[str] = (),
) -> list[str]:
    """Tables whose name or one of whose column names shares a content word with the question.

    ``value_hits`` names tables holding a value the question mentions (see
    ``values.ValueIndex.match``); they are added as they are. The result keeps
    the schema's table order.
    """
    q = question_words(question)
    chosen = {h.lower() for h in value_hits}
    for t, terms in zip(schema.tables, _schema_terms(schema), strict=True):
        if _mentions(q, terms.name) or _mentions(q, terms.columns):
            chosen.add(t.name.lower())
    return [t.name for t in schema.tables if t.name.lower() in chosen]


def fk_graph(schema: Schema) -> dict[str, set[str]]:
    """Undirected adjacency of tables joined by a foreign key (lower-cased names)."""
    graph: dict[str, set[str]] = {t.name.lower(): set() for t in schema.tables}
    for fk in schema.foreign_keys:
        a, b = fk.table.lower(), fk.ref_table.lower()
        if a in graph and b in graph and a != b:
            graph[a].add(b)
            graph[b].add(a)
    return graph


def _shortest_path(graph: dict[str, set[str]], sources: set[str], target: str) -> list[str] | None:
    prev: dict[str, str | None] = {s: None for s in sources}
    queue = deque(sorted(sources))
    while queue:
        node = queue.popleft()
        if node == target:
            path = []
            cur: str | None = node
            while cur is not None:
                path.append(cur)
                cur = prev[cur]
            return path
        for nxt in sorted(graph[node]):
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return None


def expand_with_foreign_keys(schema: Schema, tables: Iterable[str]) -> list[str]:
    """Add the tables on the shortest FK paths that connect ``tables`` to each other.

    Tables are connected one by one to the growing set (a greedy Steiner tree);
    a table with no FK path to the others stays as it is. The result keeps the
    schema's table order.
    """
    graph = fk_graph(schema)
    wanted = [t.lower() for t in tables if t.lower() in graph]
    if not wanted:
        return []
    connected = {wanted[0]}
    for t in wanted[1:]:
        if t in connected:
            continue
        path = _shortest_path(graph, connected, t)
        connected.update(path if path else [t])
    return [t.name for t in schema.tables if t.name.lower() in connected]


def add_fk_parents(schema: Schema, tables: Iterable[str]) -> list[str]:
    """``tables`` plus the tables their foreign keys point to, in schema order."""
    keep = {t.lower() for t in tables}
    keep |= {fk.ref_table.lower() for fk in schema.foreign_keys if fk.table.lower() in keep}
    return [t.name for t in schema.tables if t.name.lower() in keep]


FK_PARENTS = get_args(FkParents)  # the one definition: text2sql.params


def select_tables(
    question: str,
    schema: Schema,
    *,
    full_schema_max_tables: int = 0,
    value_hits: Iterable[str] = (),
    fk_parents: str = "never",
) -> tuple[list[str], bool]:
    """The tables to show for ``question`` and whether the full schema was used.

    Falls back to the full schema when the database has at most
    ``full_schema_max_tables`` tables or when nothing in the question matches.
    ``fk_parents`` adds the tables the linked ones point to by foreign key:
    ``always``, ``never``, or ``single`` (only when one table is linked: a
    question naming one table whose rows point to others, "names of the
    entrepreneurs" where names live in ``people``, often needs those others).
    """
    if fk_parents not in FK_PARENTS:
        raise ValueError(f"fk_parents must be one of {FK_PARENTS}, got {fk_parents!r}")
    if len(schema.tables) <= full_schema_max_tables:
        return schema.table_names, True
    linked = link_tables(question, schema, value_hits)
    if not linked:
        return schema.table_names, True
    tables = expand_with_foreign_keys(schema, linked)
    if fk_parents == "always" or (fk_parents == "single" and len(linked) == 1):
        tables = add_fk_parents(schema, tables)
    return tables, False
