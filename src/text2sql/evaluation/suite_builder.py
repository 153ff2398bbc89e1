"""A test suite in Spider's official layout made from any Spider-layout dataset: each database
plus copies with rows changed, deleted and duplicated, deterministic from a seed.

    python -m text2sql.evaluation.suite_builder ../shared/spider-train /tmp/suite --copies 3

The copies only move values around inside a column and drop or repeat rows (keys of repeated
rows made new), so every gold query still runs; they are no substitute for the released
``testsuite_databases`` (fuzzed to tell apart the queries of Spider dev), but enough to see a
prediction right on the original database and wrong on another. Used by the tests and
``bench/bench_test_suite.py``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from text2sql.io import DataError

SPLIT_FILES = ("tables.json", "train_spider.json", "train_others.json", "dev.json")
# Shares of each table's rows changed, deleted and duplicated in a copy, drawn per table so
# that row counts differ from the original's too.
CHANGED, DELETED, DUPLICATED = (0.1, 0.3), (0.05, 0.3), (0.05, 0.3)
MAX_ROWS_TOUCHED = 500  # per table and kind of change, so a large table copies quickly


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mutate_table(conn: sqlite3.Connection, table: str, rng: random.Random, copy: int) -> None:
    t = _quote(table)
    try:
        rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {t} ORDER BY rowid")]
    except sqlite3.OperationalError:  # a WITHOUT ROWID table or a view: left as it is
        return
    info = conn.execute(f"PRAGMA table_info({t})").fetchall()
    columns = [_quote(c[1]) for c in info]
    keys = {_quote(c[1]) for c in info if c[5]}
    if not rowids or not columns:
        return

    def pick(shares: tuple[float, float]) -> list[int]:
        share = rng.uniform(*shares)
        k = min(MAX_ROWS_TOUCHED, len(rowids), max(1 if len(rowids) > 2 else 0,
                                                  round(share * len(rowids))))
        return sorted(rng.sample(rowids, k))

    # Changed: a value taken from another row of the same column.
    changes = [(rng.choice(columns), rng.choice(rowids), r) for r in pick(CHANGED)]
    for column, source, target in changes:
        try:
            conn.execute(f"UPDATE OR IGNORE {t} SET {column} = (SELECT {column} FROM {t} "
                         "WHERE rowid = ?) WHERE rowid = ?", (source, target))
        except sqlite3.DatabaseError:  # a CHECK or trigger refuses it: skip this change
            pass
    # Duplicated: the same row again, its key columns made new (else the copy is refused).
    select = ", ".join(
        f"CASE typeof({c}) WHEN 'integer' THEN (SELECT max({c}) FROM {t}) + 1 "
        f"ELSE {c} || ' #{copy}' END" if c in keys else c for c in columns)
    for r in pick(DUPLICATED):
        try:
            conn.execute(f"INSERT OR IGNORE INTO {t} ({', '.join(columns)}) "
                         f"SELECT {select} FROM {t} WHERE rowid = ?", (r,))
        except sqlite3.DatabaseError:
            pass
    conn.executemany(f"DELETE FROM {t} WHERE rowid = ?", [(r,) for r in pick(DELETED)])


def make_copy(source: Path, target: Path, seed: str, copy: int) -> None:
    """``target``: ``source`` with rows of each table changed, deleted and duplicated."""
    shutil.copyfile(source, target)
    conn = sqlite3.connect(target)
    try:
        conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        for table in tables:
            _mutate_table(conn, table, random.Random(f"{seed}/{table}"), copy)
        conn.commit()
    finally:
        conn.close()


def build_test_suite(dataset: Path, out: Path, *, copies: int = 3, seed: int = 0,
                     db_ids: Sequence[str] | None = None) -> list[str]:
    """Write ``out``: a Spider-layout dataset (``dataset``'s split files and tables.json)
    whose ``database/<db_id>/`` holds ``<db_id>.sqlite`` as it is plus ``<db_id>_<k>.sqlite``
    for k = 1..``copies``. Returns the db_ids written. Same seed, same rows."""
    if copies < 0:
        raise DataError(f"copies: expected 0 or more, got {copies}")
    source = dataset / "database"
    if not source.is_dir():
        raise DataError(f"{source}: no database folder (a Spider-layout dataset has "
                        "database/<db_id>/<db_id>.sqlite)")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        if (dataset / name).is_file():
            shutil.copyfile(dataset / name, out / name)
    names = sorted(db_ids) if db_ids is not None else sorted(
        p.name for p in source.iterdir() if (p / f"{p.name}.sqlite").is_file())
    for db_id in names:
        original = source / db_id / f"{db_id}.sqlite"
        if not original.is_file():
            raise DataError(f"{original}: SQLite file not found")
        folder = out / "database" / db_id
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, folder / original.name)
        for k in range(1, copies + 1):
            make_copy(original, folder / f"{db_id}_{k}.sqlite", f"{seed}/{db_id}/{k}", k)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a Spider-layout dataset folder")
    parser.add_argument("out", type=Path, help="the folder to write the test suite to")
    parser.add_argument("--copies", type=int, default=3, help="changed copies per database")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        names = build_test_suite(args.dataset, args.out, copies=args.copies, seed=args.seed)
    except DataError as e:
        print(f"suite_builder: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(names)} databases, {args.copies} copies each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
