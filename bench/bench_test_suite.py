"""Test-suite accuracy benchmark: the evaluation core against Spider's official evaluator on the
same generated test suite and the same predictions, side by side in one run.

    python bench/bench_test_suite.py --official ../test-suite-sql-eval --official-python PY
    python bench/bench_test_suite.py /path/to/spider --limit 2000 --copies 5 --plug-value

Builds a test suite from a Spider-layout folder (``text2sql.evaluation.suite_builder``: each
database plus ``--copies`` copies with rows changed, deleted and duplicated; not timed), and
scores (gold, prediction) pairs of its first ``--limit`` examples: each gold query with
itself, its neighbour, a random query of the same database and sqlglot rewrites
(tests/exact_set_match_pairs.py). The official ``exec_eval.eval_exec_match`` runs in a
subprocess with a Python that has sqlparse and tqdm (tests/official_test_suite.py); ours is
``score_items`` (execution accuracy, exact set match and the rest included) with
``workers=1`` and ``workers=N``, and once without the test suite (what the suite adds). Prints
seconds, the ratio to the official time and whether every verdict is identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.exact_set_match_pairs import pairs  # noqa: E402
from text2sql.evaluation.scoring import EvalConfig, EvalItem, score_items  # noqa: E402
from text2sql.evaluation.suite_builder import build_test_suite  # noqa: E402
from text2sql.sql.workerpool import default_workers  # noqa: E402

SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"
VERDICT = {1: True, 0: False, "gold_error": None}


def run_official(official: Path, python: str, suite: Path, pairs_file: Path, plug_value: bool
                 ) -> tuple[float, list[bool | None]]:
    out = pairs_file.with_name("official.jsonl")
    start = time.perf_counter()
    subprocess.run([python, str(REPO / "tests" / "official_test_suite.py"), str(official),
                    str(suite), str(pairs_file), str(out), *(["--plug-value"] * plug_value)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, [VERDICT[json.loads(line)["official"]]
                     for line in out.read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path,
                        default=SPIDER_TRAIN if SPIDER_TRAIN.is_dir() else REPO / "data" / "sample")
    parser.add_argument("--split", default="train_spider.json", help="split file to read")
    parser.add_argument("--limit", type=int, default=500, help="first N examples (default 500)")
    parser.add_argument("--copies", type=int, default=3, help="changed copies per database")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="N for the workers=N row (default: one per core)")
    parser.add_argument("--plug-value", action="store_true")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="ours: seconds per query (the official code cannot stop one)")
    parser.add_argument("--official", type=Path, default=os.environ.get("TEST_SUITE_SQL_EVAL"),
                        help="a checkout of taoyds/test-suite-sql-eval (default: "
                             "$TEST_SUITE_SQL_EVAL); without it only ours runs")
    parser.add_argument("--official-python",
                        default=os.environ.get("TEST_SUITE_SQL_EVAL_PYTHON", "python3"),
                        help="a Python with sqlparse and tqdm (default: "
                             "$TEST_SUITE_SQL_EVAL_PYTHON or python3)")
    args = parser.parse_args(argv)
    examples = json.loads((args.folder / args.split).read_text())[: args.limit]
    rows_in = list(pairs(examples, seed=args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite"
        names = build_test_suite(args.folder, suite, copies=args.copies, seed=args.seed,
                                 db_ids=sorted({e["db_id"] for e in examples}))
        pairs_file = Path(tmp) / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
        items = [EvalItem(str(k), r["db_id"], str(suite / "database" / r["db_id"] /
                                                  f"{r['db_id']}.sqlite"), "", r["gold"], r["pred"])
                 for k, r in enumerate(rows_in)]
        print(f"{args.folder} [{args.split}]: {len(examples)} examples, {len(rows_in)} pairs, "
              f"{len(names)} databases x {args.copies + 1} in the suite, "
              f"plug_value={args.plug_value}, {default_workers()} cores\n", flush=True)
        official_seconds, official = None, None
        if args.official:
            official_seconds, official = run_official(args.official, args.official_python,
                                                      suite, pairs_file, args.plug_value)
            print(f"  official: {official_seconds:.1f} s", file=sys.stderr, flush=True)
        table = []
        if official is not None:
            table.append(["official exec_eval", 1, f"{official_seconds:.1f}", "1.00x", "-",
                          f"{sum(v is True for v in official) / len(official):.4f}"])
        # The last row: the same scoring without the test suite (execution accuracy on the
        # original databases, exact set match and the rest), what the suite adds to it.
        for workers, suite_on in [*((w, True) for w in dict.fromkeys((1, args.workers))),
                                  (1, False)]:
            start = time.perf_counter()
            results = score_items(items, EvalConfig(timeout_s=args.timeout, workers=workers,
                                                    progress=False,
                                                    plug_value=args.plug_value,
                                                    test_suite=suite_on))
            seconds = time.perf_counter() - start
            ours = [r.test_suite for r in results]
            same = "-" if official is None or not suite_on else (
                "yes" if ours == official else
                f"no ({sum(a != b for a, b in zip(ours, official))} differ)")
            ratio = "-" if official_seconds is None else f"{official_seconds / seconds:.2f}x"
            accuracy = f"{sum(v is True for v in ours) / len(ours):.4f}" if suite_on else "-"
            table.append(["text2sql score_items" + ("" if suite_on else ", test_suite=false"),
                          workers, f"{seconds:.1f}", ratio, same, accuracy])
            print(f"  ours, workers={workers}, test_suite={suite_on}: {seconds:.1f} s",
                  file=sys.stderr, flush=True)
    print(tabulate(table, headers=["evaluator", "workers", "seconds", "speed vs official",
                                   "verdicts identical", "test-suite accuracy"],
                   tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
