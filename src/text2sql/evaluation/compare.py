"""Comparing query results the way Spider's official test-suite evaluator does, and normalized match.

Execution match (:func:`results_match`), checked against ``result_eq`` in
taoyds/test-suite-sql-eval ``exec_eval.py``:

- Two empty results are equal, whatever their columns. Otherwise a different
  number of rows or of columns never matches.
- Results are bags (multisets) of rows: duplicates count, row order does not,
  unless order matters (see below), in which case the rows must come in the same order.
- Columns may come in another order: the prediction matches when *some*
  permutation of its columns makes it equal to the gold result (``SELECT a, b``
  matches ``SELECT b, a``). The search is exact for any number of columns: columns
  are paired only with columns holding the same multiset of values, identical
  columns are tried once, and each partial pairing must already agree as a bag.
- Values compare as Python compares what ``sqlite3`` returns: ``1 == 1.0``
  (integer and real), ``NULL == NULL`` (both ``None``), ``'1' != 1`` (text is never a
  number), ``b'x' != 'x'`` (a BLOB is never text), and floats exactly, with no rounding
  (``0.1 + 0.2 != 0.3``), all as the official evaluator does.

Which queries, and when order matters (:func:`prepare_for_execution`, :func:`order_matters`):

- By default DISTINCT is removed from both queries before they run
  (``keep_distinct=False``), as the official evaluator does by default (its
  ``--keep_distinct`` flag is off): every ``DISTINCT`` token goes, including
  ``COUNT(DISTINCT x)``, while ``UNION`` (a set operation) is untouched. With
  ``evaluate.keep_distinct: true`` the queries run as written.
- ``> =``, ``< =`` and ``! =`` are closed up to ``>=``, ``<=``, ``!=`` (the
  official ``postprocess``).
- Order matters when the gold query sorts its final result: an ORDER BY on the
  outermost SELECT or on the outermost UNION/INTERSECT/EXCEPT. Here we differ from
  the official evaluator, which looks for the text ``order by`` anywhere in the gold
  query, so an ORDER BY ... LIMIT 1 inside a subquery (34 of the 6,904 Spider train
  gold queries) makes it compare the outer rows in order although SQL leaves that
  order undefined. Ties in an ORDER BY are not forgiven (nor are they officially).
- The official quick rejection sorts the values of each row by ``str(value) +
  str(type)``, which can reject a match between ``(1, 1.5)`` and ``(1.0, 1.5)``;
  ours sorts numbers by value, so it never rejects a real match.

Normalized match (:func:`normalized_match`): both queries normalized with sqlglot and
compared as text; see :func:`normalize_sql` for what is normalized. It is not Spider's exact
set match (the leaderboard's "Exact Match"): that is :mod:`text2sql.evaluation.exact_set_match`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from text2sql.sql.parse import parse_sqlite

Row = tuple


def _value_key(v: Any) -> tuple:
    # Equal values get equal keys (1 and 1.0 included): sorting a row by this key
    # gives equal tuples for two rows holding the same values in any order.
    if v is None:
        return (0, 0)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    if isinstance(v, bytes):
        return (3, v)
    return (4, repr(v))


def _unordered(row: Sequence[Any]) -> tuple:
    return tuple(sorted(row, key=_value_key))


def _column(rows: Sequence[Row], i: int) -> tuple:
    return tuple(r[i] for r in rows)


def _bag_match_with_permutation(gold: list[Row], pred: list[Row], width: int) -> bool:
    """Whether some column permutation of ``pred`` equals ``gold`` as a bag of rows."""
    gold_cols = [_column(gold, i) for i in range(width)]
    pred_cols = [_column(pred, j) for j in range(width)]
    gold_counts = [Counter(c) for c in gold_cols]
    pred_counts = [Counter(c) for c in pred_cols]
    candidates = [[j for j in range(width) if pred_counts[j] == gold_counts[i]]
                  for i in range(width)]
    if any(not c for c in candidates):
        return False
    perm: list[int] = []
    used = [False] * width

    def extend(i: int) -> bool:
        if i == width:
            return True
        tried: set[tuple] = set()
        for j in candidates[i]:
            if used[j] or pred_cols[j] in tried:
                continue  # an identical column was already tried in this place
            tried.add(pred_cols[j])
            perm.append(j)
            used[j] = True
            cols = range(i + 1)
            if Counter(tuple(r[c] for c in cols) for r in gold) == \
                    Counter(tuple(r[perm[c]] for c in cols) for r in pred) and extend(i + 1):
                return True
            perm.pop()
            used[j] = False
        return False

    return extend(0)


def results_match(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]],
                  ordered: bool = False) -> bool:
    """Whether ``pred`` equals ``gold`` under the semantics in this module's docstring."""
    g = [tuple(r) for r in gold]
    p = [tuple(r) for r in pred]
    if not g and not p:
        return True
    if len(g) != len(p):
        return False
    width = len(g[0])
    if any(len(r) != width for r in p) or any(len(r) != width for r in g):
        return False
    if g == p or (not ordered and Counter(g) == Counter(p)):
        return True
    # Necessary condition, cheap: the same rows once each row's values are sorted.
    gu, pu = [_unordered(r) for r in g], [_unordered(r) for r in p]
    if (gu != pu) if ordered else (Counter(gu) != Counter(pu)):
        return False
    if width == 1:
        return False
    if ordered:
        # Rows stay in place, so a permutation exists exactly when the columns,
        # as whole vectors, are the same multiset.
        return Counter(_column(g, i) for i in range(width)) == \
            Counter(_column(p, i) for i in range(width))
    return _bag_match_with_permutation(g, p, width)


_parse = parse_sqlite


def order_matters(gold_sql: str) -> bool:
    """True when the gold query sorts its final result (ORDER BY on the outermost query)."""
    tree = _parse(gold_sql)
    if tree is None:
        return "order by" in " ".join(gold_sql.lower().split())
    while isinstance(tree, (exp.Subquery, exp.Paren)) and tree.args.get("order") is None:
        tree = tree.this
    return tree.args.get("order") is not None


def remove_distinct(sql: str) -> str:
    """``sql`` without its DISTINCT keywords (string literals and comments untouched).

    The official evaluator's ``remove_distinct`` drops every ``distinct`` token;
    this does the same with sqlglot's tokenizer. Unchanged if it cannot be tokenized.
    """
    if "distinct" not in sql.lower():
        return sql
    try:
        tokens = sqlglot.Dialect.get_or_raise("sqlite").tokenize(sql)
    except sqlglot.errors.SqlglotError:
        return sql
    spans = [(t.start, t.end + 1) for t in tokens if t.token_type == TokenType.DISTINCT]
    if not spans:
        return sql
    out, pos = [], 0
    for start, end in spans:
        out.append(sql[pos:start])
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def prepare_for_execution(sql: str, keep_distinct: bool = False) -> str:
    """The text that runs for execution match: the official ``postprocess`` and DISTINCT rule."""
    sql = sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    return sql if keep_distinct else remove_distinct(sql)


# --- normalized match -----------------------------------------------------------------

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.Glob)


def _enclosing_selects(node: exp.Expression) -> list[exp.Select]:
    out = []
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Select):
            out.append(parent)
        parent = parent.parent
    return out


def _source_tables(select: exp.Select) -> list[exp.Table]:
    sources = []
    from_ = select.args.get("from_")
    if from_ is not None and isinstance(from_.this, exp.Table):
        sources.append(from_.this)
    for join in select.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            sources.append(join.this)
    return sources


def _source_count(select: exp.Select) -> int:
    from_ = select.args.get("from_")
    return (from_ is not None) + len(select.args.get("joins") or [])


def _resolve_aliases(tree: exp.Expression) -> None:
    """Replace table aliases by table names (``T1.name`` -> ``singer.name``).

    A table joined to itself keeps distinct names: its aliases become
    ``<table>_1``, ``<table>_2`` in order of appearance. A qualifier is dropped
    when its SELECT reads a single table, so ``singer.name`` and ``name`` agree.
    """
    scopes: dict[int, dict[str, str]] = {}
    for select in tree.find_all(exp.Select):
        mapping: dict[str, str] = {}
        tables = _source_tables(select)
        names = Counter(t.name.lower() for t in tables)
        seen: Counter = Counter()
        for t in tables:
            name = t.name.lower()
            new = name
            if names[name] > 1:
                seen[name] += 1
                new = f"{name}_{seen[name]}"
            if t.alias:
                mapping[t.alias.lower()] = new
            mapping.setdefault(name, new)
            t.set("alias", exp.TableAlias(this=exp.to_identifier(new)) if new != name else None)
        scopes[id(select)] = mapping
    for column in list(tree.find_all(exp.Column)):
        qualifier = column.table.lower() if column.table else ""
        selects = _enclosing_selects(column)
        if qualifier:
            for s in selects:
                mapping = scopes.get(id(s), {})
                if qualifier in mapping:
                    qualifier = mapping[qualifier]
                    break
        if qualifier and selects and _source_count(selects[0]) == 1:
            own = [scopes.get(id(selects[0]), {}).get(t.name.lower(), t.name.lower())
                   for t in _source_tables(selects[0])]
            if own == [qualifier]:
                qualifier = ""
        column.set("table", exp.to_identifier(qualifier) if qualifier else None)


def _quoted_values_to_strings(tree: exp.Expression) -> None:
    # SQLite reads "English" as a string when no column has that name; Spider's gold
    # queries use that a lot. A double-quoted name compared with something is
    # taken as the string it almost always is.
    for column in list(tree.find_all(exp.Column)):
        ident = column.this
        if column.table or not isinstance(ident, exp.Identifier) or not ident.quoted:
            continue
        parent = column.parent
        is_value = (isinstance(parent, _COMPARISONS) and parent.expression is column) or \
            (isinstance(parent, exp.In) and column in (parent.expressions or [])) or \
            (isinstance(parent, exp.Between) and column is not parent.this)
        if is_value:
            column.replace(exp.Literal.string(ident.name))


def _drop_output_aliases(tree: exp.Expression) -> None:
    for select in list(tree.find_all(exp.Select)):
        aliases = {}
        for e in list(select.expressions):
            if isinstance(e, exp.Alias):
                aliases[e.alias.lower()] = e.this.copy()
                e.replace(e.this)
        order = select.args.get("order")
        if aliases and order is not None:
            for column in list(order.find_all(exp.Column)):
                if not column.table and column.name.lower() in aliases:
                    column.replace(aliases[column.name.lower()].copy())


def normalize_sql(sql: str) -> str | None:
    """A canonical text of ``sql`` for normalized match; ``None`` if sqlglot cannot parse it.

    Normalized: whitespace, keyword and identifier case, quoting of identifiers, a
    trailing semicolon, table aliases (resolved to table names; a table joined to
    itself is numbered), table qualifiers on a single-table SELECT, output column
    aliases (dropped; ORDER BY references replaced by the expression), a
    double-quoted value compared with a column (read as the string it is in
    SQLite), ``ASC`` (the default), ``INNER`` in ``INNER JOIN`` and ``<>``/``!=``.
    Not normalized: string literal case, number spelling (``1`` vs ``1.0``), the
    order of SELECT items, of AND/OR conditions and of joined tables, DISTINCT.
    """
    tree = _parse(sql)
    if tree is None:
        return None
    tree = tree.copy()  # the parse is shared (cached): change a copy
    _quoted_values_to_strings(tree)
    _resolve_aliases(tree)
    _drop_output_aliases(tree)
    for ordered in tree.find_all(exp.Ordered):
        if not ordered.args.get("desc"):
            ordered.set("desc", None)
    for join in tree.find_all(exp.Join):
        if (join.args.get("kind") or "").upper() == "INNER":
            join.set("kind", None)

    for ident in tree.find_all(exp.Identifier):
        ident.set("this", ident.name.lower())
        ident.set("quoted", not exp.SAFE_IDENTIFIER_RE.match(ident.name))
    return tree.sql(dialect="sqlite", pretty=False, copy=False).strip().rstrip(";").strip()


def normalized_match(gold_sql: str, pred_sql: str) -> bool:
    """Both queries normalize to the same text (see :func:`normalize_sql`)."""
    g, p = normalize_sql(gold_sql), normalize_sql(pred_sql)
    return g is not None and g == p
