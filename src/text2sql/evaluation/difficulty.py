"""Spider difficulty (easy / medium / hard / extra) from the structure of a gold query.

The published rules are ``count_component1``, ``count_component2``,
``count_others`` and ``eval_hardness`` in Spider's ``evaluation.py`` (the same in
taoyds/spider and taoyds/test-suite-sql-eval). They run on Spider's own parse of
the query; here they run on sqlglot's syntax tree, mapped clause by clause:

- The rules look at the *first* SELECT only. For ``A UNION B`` (any set operation,
  however long the chain) they count A's clauses, plus one nested query for the
  set operation; an ORDER BY or LIMIT after the last SELECT belongs to the last
  one in Spider's parse, so it is not counted. A WITH clause is ignored.
- component1: one each for WHERE, GROUP BY, ORDER BY and LIMIT; one per joined
  table (tables in FROM minus one; a subquery in FROM is a table); one per OR and
  one per LIKE (NOT LIKE too) among the conditions of JOIN ... ON, WHERE and HAVING.
- component2: one per subquery used as a value in a condition of ON, WHERE or
  HAVING (``x IN (SELECT ...)``, ``x > (SELECT ...)``, EXISTS), plus one for a set
  operation.
- others: one if there is more than one aggregate (MAX, MIN, COUNT, SUM, AVG) in
  SELECT items, WHERE, ORDER BY and HAVING; one if more than one SELECT item; one
  if more than one WHERE condition; one if more than one GROUP BY column.

Two quirks of the official ``count_others`` are kept so that levels agree with
published breakdowns: a negated WHERE or HAVING condition (``NOT IN``, ``NOT
LIKE``, ``NOT BETWEEN``) counts as an aggregate (it reads the condition's
``not`` flag where it means to read an aggregate), and so does each AND/OR joining
HAVING conditions; while an aggregate *inside* a WHERE or HAVING condition
(``HAVING count(*) > 1``) does not count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from text2sql.sql.parse import parse_sqlite

LEVELS = ("easy", "medium", "hard", "extra")

_AGGREGATES = (exp.Max, exp.Min, exp.Count, exp.Sum, exp.Avg)
_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div)


@dataclass(frozen=True)
class Components:
    component1: int
    component2: int
    others: int


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Subquery, exp.Paren)):
        node = node.this
    return node


def _first_select(tree: exp.Expression) -> tuple[exp.Select | None, bool]:
    """The first SELECT of a query and whether a set operation follows it."""
    node = _unwrap(tree)
    set_op = False
    while isinstance(node, exp.SetOperation):
        set_op = True
        node = _unwrap(node.this)
    return (node if isinstance(node, exp.Select) else None), set_op


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], list[str]]:
    """A boolean expression as Spider sees it: its conditions and the AND/OR between them."""
    if node is None:
        return [], []
    node = node.this if isinstance(node, (exp.Where, exp.Having)) else node
    while isinstance(node, exp.Paren) and isinstance(node.this, exp.Connector):
        node = node.this
    if isinstance(node, exp.Connector):
        left, lops = _conditions(node.this)
        right, rops = _conditions(node.expression)
        return left + right, lops + ["or" if isinstance(node, exp.Or) else "and"] + rops
    return [node], []


def _negated(cond: exp.Expression) -> bool:
    if isinstance(cond, exp.Not):
        return not isinstance(_unwrap(cond.this), exp.Is)  # IS NOT NULL: not Spider's NOT
    return bool(cond.args.get("negate"))


def _is_like(cond: exp.Expression) -> bool:
    inner = cond.this if isinstance(cond, exp.Not) else cond
    return isinstance(_unwrap(inner), exp.Like)


def _subqueries(node: exp.Expression) -> int:
    """Queries directly inside a condition (not those nested in them)."""
    if isinstance(node, (exp.Select, exp.SetOperation)):
        return 1
    return sum(_subqueries(child) for child in node.iter_expressions())


def _has_aggregate(node: exp.Expression) -> bool:
    node = node.this if isinstance(node, exp.Alias) else node
    node = _unwrap(node)
    while isinstance(node, _ARITHMETIC):  # Spider reads the aggregate before the operator
        node = _unwrap(node.this)
    return isinstance(node, _AGGREGATES)


def _order_aggregates(item: exp.Expression) -> int:
    node = _unwrap(item.this if isinstance(item, exp.Ordered) else item)
    if isinstance(node, _ARITHMETIC):
        return sum(isinstance(_unwrap(side), _AGGREGATES) for side in (node.this, node.expression))
    return int(isinstance(node, _AGGREGATES))


def count_components(sql: str) -> Components | None:
    """Spider's three counts for ``sql``; ``None`` when sqlglot cannot parse it."""
    tree = parse_sqlite(sql)
    if tree is None:
        return None
    select, set_op = _first_select(tree)
    if select is None:
        return None
    joins = select.args.get("joins") or []
    on_conds, on_ops = [], []
    for join in joins:
        c, o = _conditions(join.args.get("on"))
        if on_conds and c:
            on_ops.append("and")  # Spider joins the ON conditions of several JOINs with AND
        on_conds, on_ops = on_conds + c, on_ops + o
    where_conds, where_ops = _conditions(select.args.get("where"))
    having_conds, having_ops = _conditions(select.args.get("having"))
    group = select.args.get("group")
    group_cols = len(group.expressions) if group is not None else 0
    order = select.args.get("order")
    tables = (select.args.get("from_") is not None) + len(joins)

    all_conds = on_conds + where_conds + having_conds
    component1 = sum((
        bool(where_conds), bool(group_cols), order is not None,
        select.args.get("limit") is not None,
        max(tables - 1, 0),
        (on_ops + where_ops + having_ops).count("or"),
        sum(_is_like(c) for c in all_conds),
    ))
    component2 = sum(_subqueries(c) for c in all_conds) + int(set_op)

    aggregates = sum(_has_aggregate(e) for e in select.expressions)
    aggregates += sum(_negated(c) for c in where_conds)
    if order is not None:
        aggregates += sum(_order_aggregates(e) for e in order.expressions)
    aggregates += sum(_negated(c) for c in having_conds) + len(having_ops)
    others = sum((aggregates > 1, len(select.expressions) > 1, len(where_conds) > 1,
                  group_cols > 1))
    return Components(component1, component2, others)


def hardness(c: Components) -> str:
    """Spider's ``eval_hardness`` on the three counts."""
    c1, c2, others = c.component1, c.component2, c.others
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or \
            (c1 <= 1 and others == 0 and c2 <= 1):
        return "hard"
    return "extra"


def difficulty(sql: str) -> str | None:
    """``easy``, ``medium``, ``hard`` or ``extra`` for a gold query; ``None`` if unparsable."""
    c = count_components(sql)
    return None if c is None else hardness(c)
