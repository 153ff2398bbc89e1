"""Dataset loaders: every source yields the same normalized :class:`Example` stream.

Sources (``prepare.source``):

- ``spider``: ``train_spider.json`` (+ ``train_others.json``), ``dev.json``,
  ``tables.json``, ``database/<db_id>/<db_id>.sqlite``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from text2sql.io import DataError, read_json
from text2sql.schema import Schema, load_spider_tables

REQUIRED = ("question", "query", "db_id")


@dataclass(frozen=True)
class Example:
    id: str
    db_id: str
    question: str
    query: str
    db_path: str | None = None  # the SQLite file, when the source has one
    evidence: str | None = None


@dataclass
class Dataset:
    """The examples of one split and the schemas they refer to."""

    examples: list[Example]
    schemas: dict[str, Schema]


SPIDER_SPLIT_FILES = {"train": ["train_spider.json", "train_others.json"], "dev": ["dev.json"]}


def _spider_files(root: Path, split: str) -> list[Path]:
    names = SPIDER_SPLIT_FILES.get(split, [f"{split}.json"])
    return [root / n for n in names if (root / n).is_file()]


def _check_db(root: Path, db_id: str, schemas: dict[str, Schema], where: str) -> str:
    if db_id not in schemas:
        raise DataError(f"{where}: unknown db_id {db_id!r}: it is not in {root / 'tables.json'}")
    db_path = root / "database" / db_id / f"{db_id}.sqlite"
    if not db_path.is_file():
        raise DataError(f"{where}: db_id {db_id!r}: SQLite file {db_path} not found")
    return str(db_path)


def load_spider_split(root: str | Path, split: str) -> Dataset | None:
    """One split of a Spider-layout folder, or ``None`` when the split has no file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (prepare.path)")
    files = _spider_files(root, split)
    if not files:
        return None
    schemas = load_spider_tables(root / "tables.json")
    examples = []
    for f in files:
        data = read_json(f)
        if not isinstance(data, list):
            raise DataError(f"{f}: expected a JSON list of examples")
        for i, row in enumerate(data):
            where = f"{f}: example {i}"
            for key in REQUIRED:
                if not isinstance(row.get(key), str):
                    raise DataError(f"{where}: missing field {key!r} "
                                    f"(every example needs {', '.join(REQUIRED)})")
            db_path = _check_db(root, row["db_id"], schemas, where)
            examples.append(Example(f"{split}-{len(examples):05d}", row["db_id"], row["question"],
                                    row["query"], db_path))
    return Dataset(examples, schemas)


def split_off(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split one dataset in two, seeded, holding out whole databases.

    Holding out databases (as Spider's own dev split does) keeps any question of
    the evaluation split from having a near-twin in training.
    """
    db_ids = sorted({e.db_id for e in dataset.examples})
    random.Random(seed).shuffle(db_ids)
    n_eval = max(1, round(len(db_ids) * fraction)) if fraction > 0 else 0
    held = set(db_ids[:n_eval])
    train = [e for e in dataset.examples if e.db_id not in held]
    evals = [e for e in dataset.examples if e.db_id in held]
    return Dataset(train, dataset.schemas), Dataset(evals, dataset.schemas)


def load_dataset_splits(source: str, path: str, train_split: str, eval_split: str,
                        eval_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Train and evaluation datasets from any supported source."""
    if source == "spider":
        train = load_spider_split(path, train_split)
        if train is None:
            raise DataError(f"{path}: no file for split {train_split!r} "
                            f"(looked for {SPIDER_SPLIT_FILES.get(train_split, [train_split + '.json'])})")
        evals = load_spider_split(path, eval_split)
        if evals is None:
            return split_off(train, eval_fraction, seed)
        return train, evals
    raise DataError(f"prepare.source: {source!r} is not supported yet")


def iter_examples(dataset: Dataset) -> Iterator[Example]:
    yield from dataset.examples
