"""Spider's exact set match (the leaderboard's "Exact Match"), written on sqlglot.

The official evaluator (``evaluation.py --etype match`` in taoyds/spider and
taoyds/test-suite-sql-eval) reads each query into clauses against the database's schema and
compares them component by component, values ignored:

- SELECT items, WHERE conditions and GROUP BY columns as bags (order free); each item is
  ``(aggregate, arithmetic, column, column)`` with columns as ``table.column``, table
  aliases resolved; columns joined by a foreign key count as one (both directions);
  DISTINCT ignored (outside subqueries);
- the FROM tables as a bag; JOIN ... ON conditions only through the keywords below;
- HAVING, ORDER BY (with its one direction: the last ASC/DESC written) exactly, LIMIT by
  its presence; the set of AND/OR connectives of WHERE; INTERSECT/UNION/EXCEPT parts
  recursively; the set of keywords (where, group, having, order, asc/desc, limit, the set
  operations, or, not, in, like);
- a subquery in a condition compared whole (its values dropped, its DISTINCT kept).

A query outside the grammar the official parser reads (IN lists, IS NULL, parenthesized
conditions, comma joins, ...) has no structure (:func:`query_structure` returns None):
officially a gold query like that stops the run, and a prediction scores 0. Checked against
the official verdicts on Spider's training data: tests/test_exact_set_match.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlglot import Dialect, exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from text2sql.sql.parse import parse_sqlite
from text2sql.sql.sqlite import open_readonly

AGGREGATES = {exp.Max: 1, exp.Min: 2, exp.Count: 3, exp.Sum: 4, exp.Avg: 5}
ARITHMETIC = {exp.Sub: 1, exp.Add: 2, exp.Mul: 3, exp.Div: 4}
OPERATORS = {exp.Between: 1, exp.EQ: 2, exp.GT: 3, exp.LT: 4, exp.GTE: 5, exp.LTE: 6,
             exp.NEQ: 7, exp.In: 8, exp.Like: 9}
STAR = "__all__"


class Unsupported(Exception):
    """The query is outside the grammar of the official parser."""


@dataclass(frozen=True)
class Schema:
    """Lower-cased tables with their columns, and the foreign-key canonical column map."""

    columns: Mapping[str, tuple[str, ...]]
    foreign_key: Mapping[str, str]  # "__t.c__" -> its cluster's canonical column


@lru_cache(maxsize=256)
def read_schema(db_path: str) -> Schema:
    """The schema of a SQLite file, foreign keys from ``PRAGMA foreign_key_list`` (the
    official evaluator reads them from tables.json; on Spider's training databases both give
    the same verdicts, tests/test_exact_set_match.py)."""
    conn = open_readonly(db_path, introspect=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {t.lower(): tuple(r[1].lower() for r in
                                    conn.execute(f'PRAGMA table_info("{t}")')) for t in tables}
        keys = []
        for t in tables:
            for row in conn.execute(f'PRAGMA foreign_key_list("{t}")'):
                target, src, dst = row[2].lower(), row[3], row[4]
                if dst is None:  # REFERENCES t without a column: its primary key
                    pk = [r[1] for r in conn.execute(f'PRAGMA table_info("{row[2]}")') if r[5]]
                    dst = pk[0] if pk else None
                if src and dst:
                    keys.append((f"__{t.lower()}.{src.lower()}__", f"__{target}.{dst.lower()}__"))
    finally:
        conn.close()
    order = {f"__{t}.{c}__": k for k, (t, c) in enumerate(
        (t, c) for t, cols in columns.items() for c in cols)}
    return Schema(columns, _foreign_key_map(keys, order))


def _foreign_key_map(keys: list[tuple[str, str]], order: Mapping[str, int]) -> dict[str, str]:
    # As the official build_foreign_key_map: each key pair joins the first cluster holding
    # either column (clusters are not merged further); a cluster maps to its first column.
    clusters: list[set[str]] = []
    for a, b in keys:
        cluster = next((c for c in clusters if a in c or b in c), None)
        if cluster is None:
            cluster = set()
            clusters.append(cluster)
        cluster.update((a, b))
    out = {}
    for cluster in clusters:
        first = min(cluster, key=lambda c: order.get(c, len(order)))
        out.update({c: first for c in cluster})
    return out


# --- from sqlglot's tree to the official structure -----------------------------------------

class _Reader:
    def __init__(self, schema: Schema, tree: exp.Expression):
        self.schema = schema
        # Aliases are global to the statement in the official parser.
        self.aliases = {}
        for table in tree.find_all(exp.Table):
            if table.alias:
                self.aliases[table.alias.lower()] = table.name.lower()

    def table(self, name: str) -> str:
        name = self.aliases.get(name.lower(), name.lower())
        if name not in self.schema.columns:
            raise Unsupported(f"unknown table {name}")
        return name

    def column(self, node: exp.Expression, tables: list[str]) -> str:
        if isinstance(node, exp.Star):
            return STAR
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star) or \
                node.this.args.get("quoted") and not node.table:
            raise Unsupported(f"not a column: {node.sql()}")
        name = node.name.lower()
        candidates = [self.table(node.table)] if node.table else tables
        for t in candidates:
            if name in self.schema.columns.get(t, ()):
                return f"__{t}.{name}__"
        raise Unsupported(f"unknown column {node.sql()}")

    def col_unit(self, node: exp.Expression, tables: list[str]) -> tuple:
        while isinstance(node, exp.Paren):
            node = node.this
        agg = AGGREGATES.get(type(node), 0)
        if agg:
            node = node.this
        distinct = isinstance(node, exp.Distinct)
        if distinct:
            if len(node.expressions) != 1:
                raise Unsupported("DISTINCT over several columns")
            node = node.expressions[0]
        while isinstance(node, exp.Paren):
            node = node.this
        return (agg, self.column(node, tables), distinct)

    def val_unit(self, node: exp.Expression, tables: list[str]) -> tuple:
        while isinstance(node, exp.Paren):
            node = node.this
        op = ARITHMETIC.get(type(node), 0)
        if op:
            return (op, self.col_unit(node.this, tables), self.col_unit(node.expression, tables))
        return (0, self.col_unit(node, tables), None)

    def value(self, node: exp.Expression | None, tables: list[str]) -> Any:
        if node is None:
            return None
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Subquery):
            node = node.this
        if isinstance(node, (exp.Select, exp.SetOperation)):
            return self.query(node)
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):
            return -float(node.this.this) if not node.this.is_string else None
        if isinstance(node, exp.Literal):
            return ("text", node.this) if node.is_string else float(node.this)
        if isinstance(node, exp.Column) and node.this.args.get("quoted") and not node.table:
            return ("text", node.name)  # "text": a string value to the official tokenizer
        while type(node) in ARITHMETIC:  # the official parser reads the first column, no more
            node = node.this
        return self.col_unit(node, tables)

    def conditions(self, node: exp.Expression | None, tables: list[str]) -> list:
        if node is None or isinstance(node, exp.Boolean):
            return []
        if isinstance(node, (exp.And, exp.Or)):
            return [*self.conditions(node.this, tables), "and" if isinstance(node, exp.And)
                    else "or", *self.conditions(node.expression, tables)]
        negated = False
        if isinstance(node, exp.Not):
            node, negated = node.this, True
            if not isinstance(node, (exp.In, exp.Like, exp.Between)):
                raise Unsupported("NOT before a condition")
        if isinstance(node, exp.Like) and node.args.get("negate"):
            negated = True
        op = OPERATORS.get(type(node))
        if op is None:
            raise Unsupported(f"condition {type(node).__name__}")
        left = self.val_unit(node.this, tables)
        if isinstance(node, exp.Between):
            return [(negated, op, left, self.value(node.args.get("low"), tables),
                     self.value(node.args.get("high"), tables))]
        if isinstance(node, exp.In):
            if node.expressions or not node.args.get("query"):
                raise Unsupported("IN with a list")
            return [(negated, op, left, self.value(node.args["query"], tables), None)]
        return [(negated, op, left, self.value(node.expression, tables), None)]

    def query(self, node: exp.Expression) -> dict:
        """One query as the official ``get_sql`` structure (values: floats, ``("text", s)``,
        column units or subqueries; LIMIT's is always 1, as officially)."""
        while isinstance(node, (exp.Subquery, exp.Paren)):
            node = node.this
        if isinstance(node, exp.SetOperation):
            parts, ops = [], []
            flat = node
            while isinstance(flat, exp.SetOperation):
                if flat is not node and (flat.args.get("order") or flat.args.get("limit")):
                    raise Unsupported("ORDER BY inside a set operation")
                right = flat.expression
                while isinstance(right, (exp.Subquery, exp.Paren)):
                    right = right.this
                if isinstance(right, exp.SetOperation):
                    raise Unsupported("nested set operation")
                parts.insert(0, right)
                ops.insert(0, {exp.Union: "union", exp.Intersect: "intersect",
                               exp.Except: "except"}[type(flat)])
                flat = flat.this
                while isinstance(flat, (exp.Subquery, exp.Paren)):
                    flat = flat.this
            parts.insert(0, flat)
            # The official parser hangs a trailing ORDER BY / LIMIT on the last part and
            # each following part on the one before.
            tail = parts[-1].copy()
            for key in ("order", "limit"):
                if node.args.get(key) is not None:
                    tail.set(key, node.args[key].copy())
            parts[-1] = tail
            sql = self.select(parts[-1])
            for part, op in zip(reversed(parts[:-1]), reversed(ops)):
                outer = self.select(part)
                outer[op] = sql
                sql = outer
            return sql
        if not isinstance(node, exp.Select):
            raise Unsupported(type(node).__name__)
        return self.select(node)

    def select(self, node: exp.Select) -> dict:
        if node.args.get("with") or node.args.get("offset"):
            raise Unsupported("WITH or OFFSET")
        from_ = node.args.get("from_")
        if from_ is None:
            raise Unsupported("no FROM")
        units, tables, on = [], [], []
        for k, source in enumerate([from_.this] + [j.this for j in node.args.get("joins") or []]):
            if k:
                join = node.args["joins"][k - 1]
                if join.args.get("kind") or join.args.get("side") or join.args.get("using"):
                    raise Unsupported("a join other than JOIN ... ON")
            if isinstance(source, exp.Table):
                name = self.table(source.name)
                units.append(("table_unit", f"__{name}__"))
                tables.append(name)
            elif isinstance(source, exp.Subquery):
                units.append(("sql", self.query(source.this)))
            else:
                raise Unsupported(f"FROM {type(source).__name__}")
            if k:
                conds = self.conditions(node.args["joins"][k - 1].args.get("on"), tables)
                on += (["and"] if on and conds else []) + conds
        items = []
        for e in node.expressions:
            if isinstance(e, exp.Alias):
                e = e.this
            agg = AGGREGATES.get(type(e), 0)
            items.append((agg, self.val_unit(e.this if agg else e, tables)))
        group = node.args.get("group")
        if group is not None and (group.args.get("rollup") or group.args.get("cube")):
            raise Unsupported("GROUP BY ROLLUP/CUBE")
        order, direction = [], "asc"
        if node.args.get("order") is not None:
            for o in node.args["order"].expressions:
                key = o.this
                if isinstance(key, exp.Binary) and type(key) in OPERATORS:
                    key = key.this  # ORDER BY count(*) >= 5: officially the rest is not read
                order.append(self.val_unit(key, tables))
                if o.args.get("desc") is not None:
                    direction = "desc" if o.args["desc"] else "asc"
        where, having = node.args.get("where"), node.args.get("having")
        return {
            "select": (node.args.get("distinct") is not None, items),
            "from": {"table_units": units, "conds": on},
            "where": self.conditions(where.this if where else None, tables),
            "groupBy": [self.col_unit(g, tables) for g in (group.expressions if group else [])],
            "having": self.conditions(having.this if having else None, tables),
            "orderBy": (direction, order) if order else [],
            "limit": 1 if node.args.get("limit") is not None else None,
            "intersect": None, "union": None, "except": None,
        }


# Spellings sqlglot reads as the same tree that the official tokenizer does not read:
# ``<>``, TRUE (sqlglot writes a bare JOIN as ``JOIN t ON TRUE``) and a NOT before its
# operand (``NOT x IN ...``) rather than after (``x NOT IN``).
_AFTER_NOT = {TokenType.IN, TokenType.LIKE, TokenType.BETWEEN}


def _outside_official_tokens(sql: str) -> bool:
    try:
        tokens = Dialect.get_or_raise("sqlite").tokenize(sql)
    except SqlglotError:
        return True
    for k, token in enumerate(tokens):
        if token.token_type == TokenType.NEQ and token.text == "<>" or \
                token.token_type in (TokenType.TRUE, TokenType.FALSE):
            return True
        if token.token_type == TokenType.NOT and (
                k + 1 == len(tokens) or tokens[k + 1].token_type not in _AFTER_NOT):
            return True
    return False


def query_structure(sql: str, schema: Schema) -> dict | None:
    """The official evaluator's structure of ``sql``; None outside its grammar."""
    tree = parse_sqlite(sql)
    if tree is None or isinstance(tree, exp.Block) or _outside_official_tokens(sql):
        return None
    try:
        return _Reader(schema, tree).query(tree)
    except Unsupported:
        return None


# --- canonical columns, then the comparison -------------------------------------------------

def _canonical(sql: dict | None, valid: set[str], schema: Schema) -> dict | None:
    """Foreign-key columns mapped to one, DISTINCT dropped: the official ``rebuild_sql_col``
    (subqueries inside conditions and FROM are left as they are, as officially)."""
    if sql is None:
        return None

    def col(unit):
        if unit is None:
            return None
        agg, column, _distinct = unit
        if column in valid:
            column = schema.foreign_key.get(column, column)
        return (agg, column, None)

    def val(unit):
        return None if unit is None else (unit[0], col(unit[1]), col(unit[2]))

    def conds(cs):
        return [c if isinstance(c, str) else (c[0], c[1], val(c[2]), c[3], c[4]) for c in cs]

    out = dict(sql)
    out["select"] = (None, [(agg, val(v)) for agg, v in sql["select"][1]])
    out["from"] = {"table_units": sql["from"]["table_units"], "conds": conds(sql["from"]["conds"])}
    out["where"], out["having"] = conds(sql["where"]), conds(sql["having"])
    out["groupBy"] = [col(c) for c in sql["groupBy"]]
    if sql["orderBy"]:
        out["orderBy"] = (sql["orderBy"][0], [val(v) for v in sql["orderBy"][1]])
    for op in ("intersect", "union", "except"):
        out[op] = _canonical(sql[op], valid, schema)
    return out


def _without_values(sql: dict | None) -> dict | None:
    """The values of conditions dropped, subqueries kept (the official ``rebuild_sql_val``:
    a subquery in FROM keeps its values)."""
    if sql is None:
        return None

    def conds(cs):
        return [c if isinstance(c, str) else
                (c[0], c[1], c[2], *(_without_values(v) if isinstance(v, dict) else None
                                     for v in c[3:])) for c in cs]

    out = dict(sql)
    out["from"] = {"table_units": sql["from"]["table_units"], "conds": conds(sql["from"]["conds"])}
    out["where"], out["having"] = conds(sql["where"]), conds(sql["having"])
    for op in ("intersect", "union", "except"):
        out[op] = _without_values(sql[op])
    return out


def canonical_structure(sql: dict | None, schema: Schema) -> dict | None:
    """``sql`` without its values, the columns of its FROM tables mapped through the foreign
    keys."""
    if sql is None:
        return None
    sql = _without_values(sql)
    tables = {unit[1][2:-2] for unit in sql["from"]["table_units"] if unit[0] == "table_unit"}
    valid = {f"__{t}.{c}__" for t in tables for c in schema.columns.get(t, ())}
    return _canonical(sql, valid, schema)


def _keywords(sql: dict) -> set[str]:
    out = {name for name, present in (
        ("where", sql["where"]), ("group", sql["groupBy"]), ("having", sql["having"]),
        ("order", sql["orderBy"]), ("limit", sql["limit"] is not None),
        ("except", sql["except"]), ("union", sql["union"]), ("intersect", sql["intersect"]))
        if present}
    if sql["orderBy"]:
        out.add(sql["orderBy"][0])
    connectives = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    if "or" in connectives:
        out.add("or")
    if any(u[0] for u in units):
        out.add("not")
    if any(u[1] == OPERATORS[exp.In] for u in units):
        out.add("in")
    if any(u[1] == OPERATORS[exp.Like] for u in units):
        out.add("like")
    return out


def _bag(items) -> Counter:
    return Counter(repr(i) for i in items)


def structures_match(pred: dict, gold: dict) -> bool:
    """Component-wise equality of two canonical structures (the official ``eval_exact_match``)."""
    if _bag(pred["select"][1]) != _bag(gold["select"][1]):
        return False
    if _bag(v for _, v in pred["select"][1]) != _bag(v for _, v in gold["select"][1]):
        return False
    pred_where, gold_where = pred["where"][::2], gold["where"][::2]
    if _bag(pred_where) != _bag(gold_where) or \
            _bag(c[2] for c in pred_where) != _bag(c[2] for c in gold_where):
        return False
    # GROUP BY columns by name alone, table dropped, as officially.
    name = lambda unit: unit[1].split(".")[1] if "." in unit[1] else unit[1]  # noqa: E731
    if Counter(map(name, pred["groupBy"])) != Counter(map(name, gold["groupBy"])):
        return False
    if bool(pred["groupBy"]) != bool(gold["groupBy"]) or (gold["groupBy"] and (
            [c[1] for c in pred["groupBy"]] != [c[1] for c in gold["groupBy"]]
            or pred["having"] != gold["having"])):
        return False
    if bool(pred["orderBy"]) != bool(gold["orderBy"]) or (gold["orderBy"] and (
            pred["orderBy"] != gold["orderBy"]
            or (pred["limit"] is None) != (gold["limit"] is None))):
        return False
    if set(pred["where"][1::2]) != set(gold["where"][1::2]):
        return False
    for op in ("intersect", "except", "union"):
        if (pred[op] is None) != (gold[op] is None):
            return False
        if gold[op] is not None and not structures_match(pred[op], gold[op]):
            return False
    if _keywords(pred) != _keywords(gold):
        return False
    if gold["from"]["table_units"]:
        return _bag(pred["from"]["table_units"]) == _bag(gold["from"]["table_units"])
    return True


def gold_structure(gold_sql: str, schema: Schema) -> dict | None:
    """The canonical structure of a gold query; None outside the official grammar."""
    return canonical_structure(query_structure(gold_sql, schema), schema)


def matches_gold(pred_sql: str, gold: dict | None, schema: Schema) -> bool:
    """Exact set match of ``pred_sql`` with a gold query's :func:`gold_structure`."""
    if gold is None:
        return False
    # As officially: "value" becomes 1 in a prediction (a placeholder for models that write
    # no values), in column names too (``market_value`` then names no column).
    pred = canonical_structure(query_structure(pred_sql.replace("value", "1"), schema), schema)
    return pred is not None and structures_match(pred, gold)


def exact_set_match(gold_sql: str, pred_sql: str, schema: Schema) -> bool | None:
    """Spider's exact set match of ``pred_sql`` with ``gold_sql``; None when the gold query
    is outside the official grammar (officially the run stops there)."""
    gold = gold_structure(gold_sql, schema)
    return None if gold is None else matches_gold(pred_sql, gold, schema)

