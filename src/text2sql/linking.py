"""Schema linking: choose the tables a question needs, then join them along foreign keys.

``link_tables`` matches the question's words against table names, column names and
(optionally) stored values; ``expand_with_foreign_keys`` adds the tables on the
shortest foreign-key paths between the chosen ones, so every JOIN the answer may
need is possible. Neither looks at the gold SQL: training and inference prompts
are linked the same way.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from functools import lru_cache

import snowballstemmer

from text2sql.schema import Schema

_STEMMER = snowballstemmer.stemmer("english")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[A-Za-z]+|\d+")
# Words too common in questions to count as evidence for a table by themselves.
STOPWORDS = frozenset(
    "a an the of in on at to for by with from and or not is are was were be been has have had do "
    "does did what which who whom whose how many much list show give find name names number count "
    "all each every per their its it that this these those than more most less least there "
    "average total sum max min id ids".split()
)


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def words(text: str) -> list[str]:
    """Lowercased stems of ``text``, with snake_case and camelCase split into words."""
    text = _CAMEL.sub(" ", text.replace("_", " "))
    return [_stem(w.lower()) for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    """The stems of ``text`` that are not stopwords."""
    return {w for w in words(text) if w not in STOPWORDS and _stem(w) not in STOPWORDS}


def link_tables(
    question: str,
    schema: Schema,
    value_hits: Iterable[str] = (),
) -> list[str]:
    """Tables whose name or a column name shares a content word with the question.

    ``value_hits`` names tables holding a value the question mentions (see
    ``values.find_value_tables``); they are added as they are.
    """
    q = content_words(question)
    chosen = []
    for t in schema.tables:
        name_words = content_words(t.name)
        column_words = set().union(*(content_words(c.name) for c in t.columns)) if t.columns else set()
        if q & name_words or q & (column_words - {"id"}):
            chosen.append(t.name)
    for t in value_hits:
        if t not in chosen:
            chosen.append(t)
    return [t.name for t in schema.tables if t.name in chosen]


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


def select_tables(
    question: str,
    schema: Schema,
    *,
    full_schema_max_tables: int = 0,
    value_hits: Iterable[str] = (),
) -> tuple[list[str], bool]:
    """The tables to show for ``question`` and whether the full schema was used.

    Falls back to the full schema when the database has at most
    ``full_schema_max_tables`` tables or when nothing in the question matches.
    """
    if len(schema.tables) <= full_schema_max_tables:
        return schema.table_names, True
    linked = link_tables(question, schema, value_hits)
    if not linked:
        return schema.table_names, True
    return expand_with_foreign_keys(schema, linked), False
