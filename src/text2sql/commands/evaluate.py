"""``text2sql evaluate``: score any predictions file against a Spider- or BIRD-layout dataset."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from text2sql.io import DataError

DESCRIPTION = """\
Score SQL predictions by executing them, read-only and with a time limit, on the
databases of a Spider- or BIRD-layout dataset, with the same code and semantics
as the evaluate stage. Nothing of the DVC pipeline is touched: the outputs go to
--out only (results.jsonl, metrics.json, by_difficulty.csv, report.md).

Predictions file, either:
  JSONL: one object per line with "sql" and either "id" (the dataset's example
         id, e.g. dev-00042, or its 0-based index) or "question" (with "db_id"
         when questions repeat across databases). "db_id", when present, must
         agree with the example. Examples without a prediction score as empty.
  text:  Spider's format, one SQL per line in the order of the split, optionally
         followed by a tab and the db_id (checked). One line per example.

A BIRD-layout split is scored as BIRD's own evaluator scores it: EX as set
equality, Soft-F1, BIRD's difficulty table, R-VES with --ves-repeats (timings
depend on the machine); --semantics spider keeps Spider's rules.

A database file missing from the dataset folder (trimmed releases) is an error;
with --skip-missing-databases its examples are left out (their predictions
ignored), counted in metrics.json (skipped_missing_database) and listed in
report.md.
"""

EPILOG = """\
examples:
  text2sql evaluate preds.sql --dataset ../spider --split dev --out eval/baseline
  text2sql evaluate preds.jsonl --dataset ../bird --layout bird --split dev --out eval/bird
"""

OUTPUT_NAMES = {"results": "results.jsonl", "metrics": "metrics.json",
                "breakdown": "breakdown.json", "plot": "by_difficulty.csv", "report": "report.md"}
PIPELINE_OUTPUTS = ("metrics", "data/evaluation")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a predictions file by execution against a dataset split",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("predictions", type=Path, help="JSONL or one-SQL-per-line text file")
    p.add_argument("--dataset", type=Path, required=True, metavar="DIR",
                   help="dataset folder (Spider or BIRD layout)")
    p.add_argument("--split", default="dev", help="split to score against (default: %(default)s)")
    p.add_argument("--layout", choices=("spider", "bird"), default="spider",
                   help="dataset layout (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for results.jsonl, metrics.json, by_difficulty.csv, report.md")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds per query, enforced inside SQLite (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=100_000, metavar="N",
                   help="rows fetched per query at most (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes; 0: one per core (default: %(default)s)")
    p.add_argument("--keep-distinct", action="store_true",
                   help="run queries with their DISTINCT (default: removed, as the official "
                        "Spider evaluator does)")
    p.add_argument("--semantics", choices=("auto", "spider", "bird"), default="auto",
                   help="how results compare: auto, BIRD's evaluator for --layout bird and "
                        "Spider's otherwise (default: %(default)s)")
    p.add_argument("--gold-timeout", type=float, default=30.0, metavar="S",
                   help="seconds per gold query; those over it are counted (default: %(default)s)")
    p.add_argument("--ves-repeats", type=int, default=0, metavar="N",
                   help="BIRD semantics: time each correct prediction N times for R-VES (BIRD "
                        "uses 100; machine-dependent); 0: no R-VES (default: %(default)s)")
    p.add_argument("--ves-timeout", type=float, default=3.0, metavar="S",
                   help="seconds per R-VES timing (default: %(default)s)")
    p.add_argument("--plug-value", action="store_true",
                   help="test-suite accuracy with the gold query's values plugged into the "
                        "prediction, as the official evaluator's --plug_value")
    p.add_argument("--no-test-suite", action="store_true",
                   help="score on each example's own database only, even where its folder "
                        "holds a test suite (several *.sqlite files)")
    p.add_argument("--examples", type=int, default=3, metavar="N",
                   help="failed examples per outcome in report.md (default: %(default)s)")
    p.add_argument("--skip-missing-databases", action="store_true",
                   help="leave out (count and list) the examples whose SQLite file is missing, "
                        "instead of stopping at the first")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def load_split(dataset: Path, split: str, layout: str, skip_missing: bool = False
               ) -> tuple[list[Any], list[tuple[str, str]]]:
    """The examples of one split in order, ``None`` in the place of each one left out for a
    missing database file (``skip_missing``), and the ``(id, db_id)`` of those left out."""
    from text2sql.data import sources as datasets

    loader = getattr(datasets, f"load_{layout}_split", None)
    if loader is None:
        raise DataError(f"--layout {layout}: this version of text2sql.data.sources has no "
                        f"load_{layout}_split; use --layout spider")
    data = loader(dataset, split, skip_missing=skip_missing)
    if data is None:
        raise DataError(f"{dataset}: no file for split {split!r} in the {layout} layout "
                        "(check --split and --layout)")
    kept = list(data.examples)
    slots: list[Any] = [None] * (len(kept) + len(data.skipped))
    for e in kept:  # ids are "<split>-<position in the split>", skipped ones included
        slots[int(e.id.rsplit("-", 1)[1])] = e
    return slots, data.skipped


def _read_jsonl(path: Path, examples: list[Any], left_out: frozenset[str] = frozenset()
                ) -> tuple[dict[int, str], int]:
    from text2sql.io import iter_jsonl
    from text2sql.sql.extract import answer_sql

    by_id = {e.id: k for k, e in enumerate(examples) if e is not None}
    first_id = next(e.id for e in examples if e is not None)
    by_question: dict[tuple[str, str], list[int]] = {}
    by_text: dict[str, list[int]] = {}
    for k, e in enumerate(examples):
        if e is None:
            continue
        key = " ".join(e.question.split())
        by_question.setdefault((e.db_id, key), []).append(k)
        by_text.setdefault(key, []).append(k)
    taken: dict[int, int] = {}
    preds: dict[int, str] = {}
    lines = 0
    for lineno, row in iter_jsonl(path):
        lines += 1
        where = f"{path}:{lineno}"
        sql = row.get("sql")
        if not isinstance(sql, (str, type(None))) or "sql" not in row:
            raise DataError(f"{where}: missing or non-text field 'sql' (every line needs sql, "
                            "and id or question)")
        if "id" in row:
            ident = row["id"]
            if str(ident) in by_id:
                k = by_id[str(ident)]
            elif isinstance(ident, int) or (isinstance(ident, str) and ident.isdigit()):
                k = int(ident)
                if not 0 <= k < len(examples):
                    raise DataError(f"{where}: id {ident!r} is outside the split's "
                                    f"{len(examples)} examples (0-based index)")
            else:
                if str(ident) in left_out:
                    continue  # an example left out (its database is missing)
                raise DataError(f"{where}: id {ident!r} is not an example of this split "
                                f"(ids look like {first_id!r}, or give a 0-based index)")
        elif isinstance(row.get("question"), str):
            key = " ".join(row["question"].split())
            found = by_question.get((row["db_id"], key)) if "db_id" in row else by_text.get(key)
            free = [k for k in found or [] if k not in taken]
            if not free:
                raise DataError(f"{where}: question {row['question'][:60]!r} "
                                + ("is not in this split" if not found else
                                   "matches examples that already have a prediction")
                                + (f" (db_id {row['db_id']!r})" if "db_id" in row else ""))
            k = free[0]  # repeated questions are matched in order
        else:
            raise DataError(f"{where}: needs 'id' or 'question' to find its example")
        if examples[k] is None:
            continue  # an example left out (its database is missing)
        if k in taken:
            raise DataError(f"{where}: a second prediction for example {examples[k].id} "
                            f"(the first is on line {taken[k]})")
        if "db_id" in row and row["db_id"] != examples[k].db_id:
            raise DataError(f"{where}: db_id {row['db_id']!r} but example {examples[k].id} is "
                            f"on {examples[k].db_id!r}")
        taken[k] = lineno
        preds[k] = answer_sql(sql or "")  # a whole answer that reasons first: its final SQL
    return preds, lines


def _read_text(path: Path, examples: list[Any]) -> dict[int, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte {e.start}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    preds = {}
    for k, line in enumerate(lines[:len(examples)]):
        if examples[k] is None:
            continue  # an example left out (its database is missing)
        line = line.rstrip("\r")
        sql, _, db_id = line.rpartition("\t")
        db_id = db_id.strip()
        if not sql or not re.fullmatch(r"\w+", db_id):  # no db_id: a tab inside the SQL
            sql, db_id = line, ""
        if db_id and db_id != examples[k].db_id:
            raise DataError(f"{path}:{k + 1}: db_id {db_id!r} but example {examples[k].id} is on "
                            f"{examples[k].db_id!r} (are the lines in the split's order?)")
        preds[k] = sql.strip()
    if len(lines) != len(examples):
        raise DataError(f"{path}: {len(lines)} lines but split has {len(examples)} examples "
                        "(one SQL per line, in the order of the split; an empty line is an "
                        "empty prediction)")
    return preds


def _is_jsonl(path: Path) -> bool:
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return True
    if path.suffix in (".sql", ".txt"):
        return False
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def read_predictions(path: Path, examples: list[Any], left_out: frozenset[str] = frozenset()
                     ) -> dict[int, str]:
    """Predicted SQL by example index, from a JSONL or a one-SQL-per-line file.

    ``examples`` holds ``None`` where an example was left out (``left_out``: their ids);
    predictions for those are ignored.
    """
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    if _is_jsonl(path):
        return _read_jsonl(path, examples, left_out)[0]
    return _read_text(path, examples)


def _check_out(out: Path) -> None:
    here = Path.cwd().resolve()
    target = out.resolve()
    for protected in PIPELINE_OUTPUTS:
        p = here / protected
        if (here / "dvc.yaml").is_file() and (target == p or p in target.parents):
            raise DataError(f"--out {out}: inside {protected}/, which the DVC pipeline owns; "
                            "choose another folder (e.g. eval/<name>)")


def run(args: argparse.Namespace) -> int:
    from text2sql.evaluation.bird import BirdConfig, resolve_semantics, version_note
    from text2sql.evaluation.scoring import (
        EvalConfig,
        EvalItem,
        OutputPaths,
        score_items,
        settings_line,
        write_outputs,
    )

    if args.timeout <= 0 or args.max_rows < 1 or args.workers < 0:
        raise DataError("--timeout must be > 0, --max-rows >= 1, --workers >= 0")
    if args.gold_timeout <= 0:
        raise DataError("--gold-timeout must be > 0")
    try:
        bird_config = BirdConfig(args.ves_repeats, args.ves_timeout)
    except ValueError as e:
        raise DataError(f"--ves-repeats / --ves-timeout: {e}") from None
    _check_out(args.out)
    examples, skipped = load_split(args.dataset, args.split, args.layout,
                                   args.skip_missing_databases)
    if not any(examples):
        raise DataError(f"{args.dataset}: split {args.split!r} has no examples"
                        + (f" with a database ({len(skipped)} left out)" if skipped else ""))
    preds = read_predictions(args.predictions, examples, frozenset(i for i, _ in skipped))
    if skipped:
        print(f"text2sql evaluate: {len(skipped)} examples left out: no SQLite file for "
              f"{', '.join(sorted({db for _, db in skipped}))} (listed in report.md)",
              file=sys.stderr)
    kept = [k for k, e in enumerate(examples) if e is not None]
    missing = len(kept) - len(preds)
    if missing:
        print(f"text2sql evaluate: {missing} of {len(kept)} examples have no prediction "
              "(scored as empty_prediction)", file=sys.stderr)
    items = [EvalItem(e.id, e.db_id, e.db_path, e.question, e.query, preds.get(k, ""),
                      e.bird_difficulty) for k in kept for e in [examples[k]]]
    bird = resolve_semantics(args.semantics, args.layout == "bird") == "bird"
    config = EvalConfig(timeout_s=args.timeout, max_rows=args.max_rows, workers=args.workers,
                        keep_distinct=args.keep_distinct, progress=not args.no_progress,
                        gold_timeout_s=args.gold_timeout,
                        bird=bird_config if bird else None,
                        test_suite=not args.no_test_suite, plug_value=args.plug_value)
    results = score_items(items, config)
    paths = OutputPaths(**{k: args.out / v for k, v in OUTPUT_NAMES.items()})
    title = f"Evaluation of {args.predictions.name} on {args.dataset.name}/{args.split}"
    digests = [e.bird_sha256 for e in examples if e is not None and e.bird_sha256]
    metrics = write_outputs(results, paths, title=title,
                            settings=settings_line(config) + version_note(digests),
                            examples=args.examples,
                            skipped=skipped if args.skip_missing_databases else None)
    print(paths.report.read_text(encoding="utf-8").split("<details>")[0].rstrip())
    print(f"\nwritten to {args.out}/: " + ", ".join(OUTPUT_NAMES.values()))
    return 0 if metrics["n"] else 1
