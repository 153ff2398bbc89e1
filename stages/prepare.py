"""prepare: load a dataset, link each question to its tables, write ChatML examples.

    dvc repro prepare
    dvc exp run -S prepare.path=../spider -S prepare.schema_format=compact
    dvc exp run -S prepare.source=jsonl -S prepare.path=data/my.jsonl -S prepare.db_dir=data/dbs
    dvc exp run -S prepare.source=sparc -S prepare.path=data/sample-sparc   # conversations
    dvc exp run -S prepare.source=synsql -S prepare.path=../SynSQL-2.5M -S prepare.answer=reasoning \
        -S prepare.workers=0 -S prepare.eval_fraction=0.01   # OmniSQL's data, chain of thought
    python stages/prepare.py            # the same, outside DVC

Reads the ``prepare:`` section of params.yaml. Writes ``data/prepared/train.jsonl``,
``data/prepared/eval.jsonl``, ``data/prepared/dropped.jsonl`` (examples left out,
and why) and ``metrics/prepare.json``. Nothing is replaced unless the whole run
succeeds.
"""

from __future__ import annotations

import faulthandler
import sys
from dataclasses import asdict
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from text2sql.data.prepare import PrepareStats, load_splits, prepare_examples, prompt_options
from text2sql.io import DataError, atomic_path, write_json, write_jsonl
from text2sql.params import PrepareParams, load_params

OUT_DIR = Path("data/prepared")
METRICS = Path("metrics/prepare.json")


def main(params: PrepareParams) -> None:
    train, evals = load_splits(params)
    options = prompt_options(params)
    limits = {"train": params.max_train_examples, "eval": params.max_eval_examples}
    metrics: dict[str, float] = {}
    dropped: list[dict] = []
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        for name, ds in (("train", train), ("eval", evals)):
            stats = PrepareStats()
            examples = tqdm(islice(ds.examples, limits[name]), desc=f"prepare {name}",
                            unit=" examples", disable=None)
            write_jsonl(tmp / f"{name}.jsonl",
                        prepare_examples(examples, ds.schemas, options=options,
                                         check_gold=params.check_gold, stats=stats,
                                         workers=params.workers))
            stats.drop_conversations(ds.bad)  # multi-turn input left out by the loader
            if stats.n == 0:
                raise DataError(f"{params.path}: the {name} split has no usable example "
                                f"({stats.read} read, {sum(stats.dropped.values())} dropped)")
            metrics.update(stats.as_metrics(name))
            dropped += [{"split": name, **asdict(d)} for d in stats.dropped_examples]
        write_jsonl(tmp / "dropped.jsonl", dropped)
        write_json(METRICS, metrics)
    for d in dropped[:10]:
        print(f"prepare: dropped {d['split']} example {d['id']} ({d['db_id']}): {d['reason']}"
              + (f": {d['detail']}" if d["detail"] else ""), file=sys.stderr)
    if len(dropped) > 10:
        print(f"prepare: ... {len(dropped) - 10} more in {OUT_DIR / 'dropped.jsonl'}", file=sys.stderr)
    print(f"prepare: {metrics['train_n']} train, {metrics['eval_n']} eval examples -> {OUT_DIR}; "
          f"table recall {metrics['train_table_recall']:.4f} (train), schema tokens "
          f"-{metrics['train_schema_token_reduction']:.1%} vs the full schema")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("prepare"))
    except DataError as e:
        sys.exit(f"prepare: error: {e}")
