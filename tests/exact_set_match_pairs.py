"""(gold, pred, db_id) pairs from Spider's training split for checking exact set match
against the official evaluator (tests/official_exact_set_match.py):

- each gold query with itself, with its neighbour on the same database (often the same
  question paraphrased) and with a random query of the same database;
- each gold query rewritten by sqlglot the way models vary it: SELECT items reordered, AND
  operands swapped, a value changed, aliases renamed, DISTINCT added, ASC spelled out, a
  column swapped along its join, ``<>`` for ``!=``, a condition dropped, LIMIT changed,
  MIN/MAX swapped.

    python tests/exact_set_match_pairs.py SPIDER_DIR pairs.jsonl     # seed 0
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator

import sqlglot
from sqlglot import exp


def rewrites(sql: str, rng: random.Random) -> Iterator[tuple[str, str]]:
    """``(kind, rewritten SQL)`` for each rewrite that applies to ``sql``."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return
    first = lambda t: t if isinstance(t, exp.Select) else t.find(exp.Select)  # noqa: E731
    if first(tree) is None:
        return
    text = lambda t: t.sql(dialect="sqlite")  # noqa: E731

    t = tree.copy()
    if len(first(t).expressions) > 1:
        first(t).set("expressions", list(reversed(first(t).expressions)))
        yield "select_reordered", text(t)
    t = tree.copy()
    a = t.find(exp.And)
    if a is not None and not isinstance(a.parent, exp.Join):
        a.replace(exp.and_(a.expression.copy(), a.this.copy(), copy=False))
        yield "and_swapped", text(t)
    t = tree.copy()
    literals = list(t.find_all(exp.Literal))
    if literals:
        lit = rng.choice(literals)
        lit.replace(exp.Literal.string("zzz") if lit.is_string else exp.Literal.number(7))
        yield "value_changed", text(t)
    t = tree.copy()
    aliased = [x for x in t.find_all(exp.Table) if x.alias]
    if aliased:
        names = {x.alias.lower(): f"a{k}" for k, x in enumerate(aliased)}
        for x in aliased:
            x.set("alias", exp.TableAlias(this=exp.to_identifier(names[x.alias.lower()])))
        for c in t.find_all(exp.Column):
            if c.table and c.table.lower() in names:
                c.set("table", exp.to_identifier(names[c.table.lower()]))
        yield "aliases_renamed", text(t)
    t = tree.copy()
    first(t).set("distinct", exp.Distinct())
    yield "distinct_added", text(t)
    t = tree.copy()
    ordered = list(t.find_all(exp.Ordered))
    if ordered:
        for o in ordered:
            if not o.args.get("desc"):
                o.set("desc", False)
        yield "asc_explicit", text(t)
    t = tree.copy()
    join = t.find(exp.Join)
    if join is not None and isinstance(join.args.get("on"), exp.EQ):
        eq = join.args["on"]
        left, right = eq.this, eq.expression
        if isinstance(left, exp.Column) and isinstance(right, exp.Column):
            for c in t.find_all(exp.Column):
                if c is not left and c.parent is not eq and c.sql() == left.sql():
                    c.replace(right.copy())
            yield "join_column_swapped", text(t)
    t = tree.copy()
    where = t.find(exp.Where)
    if where is not None and isinstance(where.this, exp.And):
        where.set("this", where.this.this.copy())
        yield "condition_dropped", text(t)
    t = tree.copy()
    limit = t.find(exp.Limit)
    if limit is not None:
        limit.set("expression", exp.Literal.number(3))
        yield "limit_changed", text(t)
    t = tree.copy()
    agg = t.find(exp.Max, exp.Min)
    if agg is not None:
        agg.replace((exp.Min if isinstance(agg, exp.Max) else exp.Max)(this=agg.this.copy()))
        yield "aggregate_changed", text(t)
    t = tree.copy()
    if t.find(exp.NEQ) is not None:
        yield "neq_sqlglot", text(t)  # sqlglot writes != as <>


def pairs(train: list[dict], seed: int = 0) -> Iterator[dict]:
    rng = random.Random(seed)
    by_db: dict[str, list[int]] = {}
    for k, ex in enumerate(train):
        by_db.setdefault(ex["db_id"], []).append(k)
    for k, ex in enumerate(train):
        preds = [("self", ex["query"])]
        if k + 1 < len(train) and train[k + 1]["db_id"] == ex["db_id"]:
            preds.append(("neighbour", train[k + 1]["query"]))
        preds.append(("random", train[rng.choice(by_db[ex["db_id"]])]["query"]))
        for kind, pred in preds:
            yield {"index": k, "kind": kind, "db_id": ex["db_id"], "gold": ex["query"], "pred": pred}
    for k, ex in enumerate(train):
        for kind, pred in rewrites(ex["query"], rng):
            yield {"index": k, "kind": kind, "db_id": ex["db_id"], "gold": ex["query"], "pred": pred}


if __name__ == "__main__":
    spider_dir, out = sys.argv[1:3]
    with open(f"{spider_dir}/train_spider.json") as f:
        train = json.load(f)
    with open(out, "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs(train))
