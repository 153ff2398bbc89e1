"""Evaluation benchmark: examples scored per second, one worker against one per core.

    python bench/bench_evaluate.py      # ../shared/spider-train if present, else data/sample
    python bench/bench_evaluate.py /path/to/spider --split dev --workers 8 --limit 2000

Scores one split of any Spider-layout folder with the evaluation core (the code of
the evaluate stage and of ``text2sql evaluate``), side by side in one run:

- gold vs gold: every prediction is its gold query (all correct but the gold errors);
- gold vs perturbed: a seeded mix of the gold query unchanged and changed so that
  it returns another result (ASC/DESC swapped, ``=`` made ``!=``, LIMIT 1 added),
  names a missing column or table, or is cut short (a parse error).

Each runs with ``workers=1`` and with ``workers=N`` (default: one per core), the
gold cache starting empty every time. Prints examples/s, the N-worker speedup, and
the outcomes, so the perturbations can be checked to land where they should.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

from tabulate import tabulate

from text2sql.data.sources import load_spider_split
from text2sql.evaluation.scoring import (
    EvalConfig,
    EvalItem,
    score_items,
    summarize,
    unique_gold_queries,
)
from text2sql.io import DataError
from text2sql.sql.workerpool import default_workers

REPO = Path(__file__).resolve().parents[1]
SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"


def perturb(sql: str, rng: random.Random) -> str:
    """A seeded change of a gold query: unchanged, another result, or an error."""
    kind = rng.randrange(7)
    if kind == 0:
        return sql
    if kind == 1 and re.search(r"\b(ASC|DESC)\b", sql, re.I):
        return re.sub(r"\b(ASC|DESC)\b", lambda m: "ASC" if m.group(1).upper() == "DESC"
                      else "DESC", sql, count=1, flags=re.I)
    if kind == 2 and " = " in " ".join(sql.split()):
        return re.sub(r"\s=\s", " != ", sql, count=1)
    if kind == 3:
        return re.sub(r"(?i)^\s*SELECT\s+(DISTINCT\s+)?(\w+)", lambda m: m.group(0) + "_x", sql,
                      count=1)
    if kind == 4:
        return re.sub(r"(?i)\bFROM\s+(\w+)", lambda m: m.group(0) + "_x", sql, count=1)
    if kind == 5:
        return sql[: max(1, len(sql) * 2 // 3)]
    return f"SELECT * FROM ({sql.rstrip().rstrip(';')}) LIMIT 1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path,
                        default=SPIDER_TRAIN if SPIDER_TRAIN.is_dir() else REPO / "data" / "sample")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="N for the workers=N rows (default: one per core)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per query")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        dataset = load_spider_split(args.folder, args.split)
    except DataError as e:
        print(f"bench_evaluate: error: {e}", file=sys.stderr)
        return 2
    if dataset is None:
        print(f"bench_evaluate: error: {args.folder}: no file for split {args.split!r}",
              file=sys.stderr)
        return 2
    examples = list(dataset.examples)[: args.limit]
    rng = random.Random(args.seed)
    runs = {
        "gold vs gold": [EvalItem(e.id, e.db_id, e.db_path, e.question, e.query, e.query)
                         for e in examples],
        "gold vs perturbed": [EvalItem(e.id, e.db_id, e.db_path, e.question, e.query,
                                       perturb(e.query, rng)) for e in examples],
    }
    n_gold = len(unique_gold_queries(runs["gold vs gold"]))
    print(f"{args.folder} [{args.split}]: {len(examples)} examples, {n_gold} distinct "
          f"(database, gold SQL), {len({e.db_id for e in examples})} databases, "
          f"{default_workers()} cores\n", flush=True)
    rows, outcome_rows = [], []
    for name, items in runs.items():
        base = None
        for workers in dict.fromkeys((1, args.workers)):
            start = time.perf_counter()
            results = score_items(items, EvalConfig(timeout_s=args.timeout, workers=workers,
                                                    progress=sys.stderr.isatty()))
            seconds = time.perf_counter() - start
            m = summarize(results)
            rate = len(items) / seconds
            base = base or rate
            rows.append([name, workers, f"{seconds:.1f}", f"{rate:.0f}", f"{rate / base:.2f}x",
                         f"{m['execution_accuracy']:.3f}", f"{m['normalized_match']:.3f}",
                         int(m["gold_errors"])])
            print(f"  {name}, workers={workers}: {seconds:.1f} s", file=sys.stderr, flush=True)
        outcome_rows.append([name] + [int(m[f"outcome_{k}"]) for k in
                                      ("correct", "wrong_result", "parse_error", "unknown_table",
                                       "unknown_column", "execution_error", "timeout")])
    print(tabulate(rows, headers=["predictions", "workers", "seconds", "examples/s",
                                  "vs workers=1", "exec acc", "normalized match", "gold errors"],
                   tablefmt="github"))
    print()
    print(tabulate(outcome_rows, headers=["predictions", "correct", "wrong", "parse", "no table",
                                          "no column", "exec error", "timeout"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
