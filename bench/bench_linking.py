"""Schema-linking benchmark: gold-table recall and schema tokens against the full schema.

    python bench/bench_linking.py                      # ../shared/spider-train if present, else data/sample
    python bench/bench_linking.py /path/to/spider --split dev
    python bench/bench_linking.py /path/to/spider --skip-missing-databases   # a trimmed release

Runs the prepare core (``prepare_examples``, the same code as the stage) over
one split of any Spider-layout folder once per linking configuration, side by
side in one run, and prints one row per configuration: recall of the tables the
gold SQL reads (sqlglot), mean schema tokens shown, and the saving against
pasting the full schema. Gold queries that do not run are left out, as in the
stage. Tokens are the model-free count of ``prepare.count_tokens``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate
from tqdm import tqdm

from text2sql.data.prepare import PrepareStats, prepare_examples
from text2sql.data.prompts import PromptOptions
from text2sql.data.sources import load_spider_split
from text2sql.io import DataError

REPO = Path(__file__).resolve().parents[1]
SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"

CONFIGS: list[tuple[str, PromptOptions]] = [
    ("full schema (no linking)", PromptOptions(link_schema=False, link_values=False)),
    ("names + FK paths", PromptOptions(link_values=False, fk_parents="never")),
    ("names + values + FK paths", PromptOptions(fk_parents="never")),
    ("+ FK parents of a lone table (default)", PromptOptions()),
    ("+ FK parents always", PromptOptions(fk_parents="always")),
    ("default, compact format", PromptOptions(schema_format="compact")),
    ("default, M-Schema format", PromptOptions(schema_format="mschema")),
]


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """The folder, ``--split`` and ``--limit`` arguments (``bench_values`` shares them)."""
    parser.add_argument("folder", nargs="?", type=Path,
                        default=SPIDER_TRAIN if SPIDER_TRAIN.is_dir() else REPO / "data" / "sample")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")


def load_split(args: argparse.Namespace, prog: str, skip_missing: bool = False):
    """The split ``args`` name, or ``None`` after saying on stderr why it cannot be read."""
    try:
        dataset = load_spider_split(args.folder, args.split, skip_missing=skip_missing)
    except DataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None
    if dataset is None:
        print(f"{prog}: error: {args.folder}: no file for split {args.split!r}", file=sys.stderr)
    return dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(parser)
    parser.add_argument("--skip-missing-databases", action="store_true",
                        help="leave out (count and list) the examples whose SQLite file is "
                             "missing, instead of stopping at the first")
    args = parser.parse_args(argv)
    dataset = load_split(args, "bench_linking", args.skip_missing_databases)
    if dataset is None:
        return 2
    examples = dataset.examples[: args.limit]
    rows = []
    for name, options in CONFIGS:
        stats = PrepareStats()
        start = time.perf_counter()
        for _ in prepare_examples(tqdm(examples, desc=name, leave=False, disable=None),
                                  dataset.schemas, options=options, stats=stats):
            pass
        seconds = time.perf_counter() - start
        m = stats.as_metrics("x")
        rows.append([name, m["x_table_recall"], m["x_tables_shown_mean"], m["x_schema_tokens_mean"],
                     m["x_full_schema_tokens_mean"], f"{m['x_schema_token_reduction']:.1%}",
                     m["x_prompt_tokens_mean"], m["x_prompt_tokens_max"],
                     f"{m['x_full_schema_rate']:.1%}", f"{1000 * seconds / max(stats.read, 1):.2f}"])
    left_out = ""
    if dataset.skipped:
        per_db = Counter(db for _, db in dataset.skipped)
        left_out = (f", {len(dataset.skipped)} left out (no SQLite file): "
                    + ", ".join(f"{db} ({n})" for db, n in sorted(per_db.items())))
    print(f"{args.folder} [{args.split}]: {stats.n} examples "
          f"({stats.read - stats.n} dropped: gold SQL that does not run{left_out}), "
          f"{len({e.db_id for e in examples})} databases\n")
    print(tabulate(rows, headers=["linking", "recall", "tables", "schema tok", "full schema tok",
                                  "fewer tok", "prompt tok", "max prompt", "full-schema rate",
                                  "ms/question"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
