"""Comparing query results with Spider's execution semantics.

What counts as equal, exactly:

- Results are bags (multisets) of rows: duplicates count, row order does not,
  unless the gold query has a top-level ORDER BY, in which case order counts too.
- Columns may come in another order: the predicted columns are matched to the
  gold ones by trying permutations, as the official test-suite evaluator does.
  A different number of columns never matches.
- ``1`` and ``1.0`` are equal; floats are compared after rounding to 6 decimals
  (so ``0.1 + 0.2`` equals ``0.3``); ``NULL`` equals ``NULL``; ``'1'`` (text)
  does not equal ``1`` (number).
- Two empty results are equal.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlglot
from sqlglot import exp

MAX_PERMUTED_COLUMNS = 6


def _norm(value: Any) -> Any:
    if isinstance(value, float):
        r = round(value, 6)
        return int(r) if r.is_integer() else r
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _norm_rows(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    return [tuple(_norm(v) for v in row) for row in rows]


def _same(a: list[tuple], b: list[tuple], ordered: bool) -> bool:
    return a == b if ordered else Counter(a) == Counter(b)


def results_match(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]],
                  ordered: bool = False) -> bool:
    """Whether ``pred`` equals ``gold`` under the semantics in this module's docstring."""
    g, p = _norm_rows(gold), _norm_rows(pred)
    if len(g) != len(p):
        return False
    if not g:
        return True
    width = len(g[0])
    if any(len(r) != width for r in p):
        return False
    if _same(g, p, ordered):
        return True
    if width > MAX_PERMUTED_COLUMNS or width == 1:
        return False
    gold_columns = [Counter(r[i] for r in g) for i in range(width)]
    pred_columns = [Counter(r[i] for r in p) for i in range(width)]
    # Only permutations that pair columns holding the same values can match.
    options = [[j for j in range(width) if pred_columns[j] == gold_columns[i]] for i in range(width)]
    for perm in itertools.product(*options):
        if len(set(perm)) != width:
            continue
        permuted = [tuple(r[j] for j in perm) for r in p]
        if _same(g, permuted, ordered):
            return True
    return False


def order_matters(gold_sql: str) -> bool:
    """True when the gold query sorts its final result (a top-level ORDER BY)."""
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return "order by" in gold_sql.lower()
    return tree is not None and tree.args.get("order") is not None


def normalize_sql(sql: str) -> str | None:
    """A canonical text of ``sql`` for exact match; ``None`` if it does not parse.

    Keywords and identifiers are lower-cased, whitespace and quoting made uniform,
    and table aliases replaced by the table names they stand for.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return None
    if tree is None:
        return None
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        if table.alias:
            aliases[table.alias.lower()] = table.name.lower()
            table.set("alias", None)
    for column in tree.find_all(exp.Column):
        if column.table and column.table.lower() in aliases:
            column.set("table", exp.to_identifier(aliases[column.table.lower()]))

    def lower(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Identifier):
            return exp.to_identifier(node.name.lower())
        return node

    tree = tree.transform(lower)
    return tree.sql(dialect="sqlite", normalize=True, pretty=False).strip().rstrip(";").lower()


def exact_match(gold_sql: str, pred_sql: str) -> bool:
    """Both queries normalize to the same text (see :func:`normalize_sql`)."""
    g, p = normalize_sql(gold_sql), normalize_sql(pred_sql)
    return g is not None and g == p
