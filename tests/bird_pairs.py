"""Spider's training split in BIRD's layout, and adversarial (gold, pred) pairs on it, for checking
BIRD's EX and Soft-F1 against BIRD's own evaluator (tests/official_bird.py):

- ``dev.json`` (``question``, ``SQL``, ``db_id``, ``evidence`` empty, ``difficulty``),
  ``dev_tables.json`` (Spider's ``tables.json``) and ``dev_databases/<db>/<db>.sqlite`` (links
  to Spider's files), as BIRD's dev release lays them out. ``difficulty`` comes from Spider's
  hardness (text2sql.evaluation.difficulty): easy -> simple, medium -> moderate, hard and
  extra -> challenging; a gold query it cannot rate -> moderate.
- every ``step``-th example's gold query against: itself, its neighbour's and a random gold
  query of the same database, and rewrites that change the result in the ways BIRD's set
  equality and Spider's bag comparison see differently: columns swapped, a column dropped or
  repeated, ORDER BY dropped or reversed, LIMIT added, rows doubled with UNION ALL, DISTINCT
  added or removed, plus the rewrites of tests/exact_set_match_pairs.py.

    python tests/bird_pairs.py SPIDER_DIR OUT_DIR [STEP]   # OUT_DIR/dev..., OUT_DIR/pairs.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import sqlglot
from sqlglot import exp

from tests.exact_set_match_pairs import rewrites
from text2sql.evaluation.compare import remove_distinct
from text2sql.evaluation.difficulty import difficulty

BIRD_LEVEL = {"easy": "simple", "medium": "moderate", "hard": "challenging",
              "extra": "challenging"}


def bird_level(gold: str) -> str:
    return BIRD_LEVEL.get(difficulty(gold) or "", "moderate")


def convert(spider_dir: Path, out: Path, split: str = "dev") -> list[dict]:
    """Write Spider's training split in BIRD's layout under ``out``; its examples."""
    train = json.loads((spider_dir / "train_spider.json").read_text())
    rows = [{"question": ex["question"], "SQL": ex["query"], "db_id": ex["db_id"],
             "evidence": "", "difficulty": bird_level(ex["query"])} for ex in train]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{split}.json").write_text(json.dumps(rows, indent=1))
    (out / f"{split}_tables.json").write_text((spider_dir / "tables.json").read_text())
    for db_id in sorted({r["db_id"] for r in rows}):
        folder = out / f"{split}_databases" / db_id
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{db_id}.sqlite"
        if not link.exists():
            link.symlink_to((spider_dir / "database" / db_id / f"{db_id}.sqlite").resolve())
    return rows


def result_rewrites(sql: str) -> Iterator[tuple[str, str]]:
    """``(kind, SQL)`` rewrites whose results BIRD's and Spider's rules compare differently."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return
    text = lambda t: t.sql(dialect="sqlite")  # noqa: E731
    select = tree if isinstance(tree, exp.Select) else None
    if select is not None and len(select.expressions) > 1:
        t = tree.copy()
        t.set("expressions", [*t.expressions[1:], t.expressions[0]])
        yield "columns_rotated", text(t)
        t = tree.copy()
        t.set("expressions", t.expressions[:1])
        yield "column_dropped", text(t)
    if select is not None:
        t = tree.copy()
        t.set("expressions", [*t.expressions, t.expressions[0].copy()])
        yield "column_repeated", text(t)
    if tree.args.get("order") is not None:
        t = tree.copy()
        t.set("order", None)
        if t.args.get("limit") is None:
            yield "order_by_dropped", text(t)
        t = tree.copy()
        for o in t.args["order"].expressions:
            o.set("desc", not o.args.get("desc"))
        yield "order_reversed", text(t)
    if tree.args.get("limit") is None:
        yield "limit_added", f"SELECT * FROM ({sql}) LIMIT 2"
    yield "rows_doubled", f"SELECT * FROM ({sql}) UNION ALL SELECT * FROM ({sql})"
    if "distinct" in sql.lower():
        yield "distinct_removed", remove_distinct(sql)


def pairs(rows: list[dict], step: int = 10, seed: int = 0) -> Iterator[dict]:
    rng = random.Random(seed)
    by_db: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_db.setdefault(r["db_id"], []).append(k)
    for k in range(0, len(rows), step):
        gold = rows[k]["SQL"]
        preds = [("self", gold)]
        if k + 1 < len(rows) and rows[k + 1]["db_id"] == rows[k]["db_id"]:
            preds.append(("neighbour", rows[k + 1]["SQL"]))
        preds.append(("random", rows[rng.choice(by_db[rows[k]["db_id"]])]["SQL"]))
        preds += list(result_rewrites(gold))
        preds += [(kind, sql) for kind, sql in rewrites(gold, rng)
                  if kind in ("distinct_added", "condition_dropped", "value_changed",
                              "limit_changed", "aggregate_changed")]
        for kind, pred in preds:
            yield {"index": k, "kind": kind, "db_id": rows[k]["db_id"], "gold": gold,
                   "pred": pred, "difficulty": rows[k]["difficulty"]}


if __name__ == "__main__":
    spider, out = Path(sys.argv[1]), Path(sys.argv[2])
    step = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    examples = convert(spider, out)
    with open(out / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs(examples, step))
