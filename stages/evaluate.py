"""evaluate: execution accuracy and exact match of the predictions on real SQLite databases.

    dvc repro evaluate
    dvc metrics diff                    # compare with the last commit
    python stages/evaluate.py           # the same, outside DVC

Reads the ``evaluate:`` section of params.yaml, ``data/prepared/eval.jsonl`` and
``data/predictions/eval.jsonl``. Writes ``metrics/eval.json`` and the per-example
``data/evaluation/results.jsonl``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from text2sql.evaluation import as_dict, score, summarize
from text2sql.io import DataError, iter_jsonl, write_json, write_jsonl
from text2sql.params import EvaluateParams, load_params

EVAL_FILE = Path("data/prepared/eval.jsonl")
PREDICTIONS = Path("data/predictions/eval.jsonl")
RESULTS = Path("data/evaluation/results.jsonl")
METRICS = Path("metrics/eval.json")


def main(params: EvaluateParams) -> None:
    examples = [row for _, row in iter_jsonl(EVAL_FILE)]
    predictions = {}
    for lineno, row in iter_jsonl(PREDICTIONS):
        if "id" not in row or "sql" not in row:
            raise DataError(f"{PREDICTIONS}:{lineno}: missing field 'id' or 'sql'")
        predictions[row["id"]] = row["sql"]
    results = score(examples, predictions, timeout_s=params.timeout_s, max_rows=params.max_rows)
    metrics = summarize(results)
    write_jsonl(RESULTS, (as_dict(r) for r in results))
    write_json(METRICS, metrics)
    print(f"evaluate: execution accuracy {metrics['execution_accuracy']}, "
          f"exact match {metrics['exact_match']} on {metrics['n']} examples")


if __name__ == "__main__":
    try:
        main(load_params("evaluate"))
    except DataError as e:
        sys.exit(f"evaluate: error: {e}")
