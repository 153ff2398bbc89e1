"""prepare: load a dataset, link each question to its tables, write ChatML examples.

    dvc repro prepare
    dvc exp run -S prepare.path=../spider -S prepare.schema_format=compact
    python stages/prepare.py            # the same, outside DVC

Reads the ``prepare:`` section of params.yaml. Writes ``data/prepared/train.jsonl``,
``data/prepared/eval.jsonl`` and ``metrics/prepare.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from text2sql.datasets import load_dataset_splits
from text2sql.io import DataError, atomic_path, write_json, write_jsonl
from text2sql.params import PrepareParams, load_params
from text2sql.prepare import PrepareStats, prepare_examples

OUT_DIR = Path("data/prepared")
METRICS = Path("metrics/prepare.json")


def main(params: PrepareParams) -> None:
    train, evals = load_dataset_splits(params.source, params.path, params.train_split,
                                       params.eval_split, params.eval_fraction, params.seed)
    limits = {"train": params.max_train_examples, "eval": params.max_eval_examples}
    metrics: dict[str, float] = {}
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        for name, ds in (("train", train), ("eval", evals)):
            stats = PrepareStats()
            rows = prepare_examples(ds.examples[: limits[name]], ds.schemas,
                                    schema_format=params.schema_format,
                                    link_schema=params.link_schema,
                                    full_schema_max_tables=params.full_schema_max_tables,
                                    stats=stats)
            write_jsonl(tmp / f"{name}.jsonl", rows)
            if stats.n == 0:
                raise DataError(f"{params.path}: the {name} split is empty")
            metrics.update(stats.as_metrics(name))
    write_json(METRICS, metrics)
    print(f"prepare: {metrics['train_n']} train, {metrics['eval_n']} eval examples -> {OUT_DIR}")


if __name__ == "__main__":
    try:
        main(load_params("prepare"))
    except DataError as e:
        sys.exit(f"prepare: error: {e}")
