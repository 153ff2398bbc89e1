"""evaluate: execution accuracy and exact set match of the predictions on real SQLite databases.

    dvc repro evaluate
    dvc metrics diff                    # vs the last commit: overall, per difficulty, per outcome
    dvc plots show metrics/eval_by_difficulty.csv
    dvc exp run -S evaluate.timeout_s=10 -S evaluate.keep_distinct=true
    dvc exp run -S evaluate.semantics=bird -S evaluate.ves_repeats=10   # BIRD's EX, Soft-F1, R-VES
    dvc exp run -S evaluate.plug_value=true   # test-suite accuracy with gold values plugged in
    python stages/evaluate.py           # the same, outside DVC

Reads the ``evaluate:`` section of params.yaml, ``data/prepared/eval.jsonl`` and
``data/predictions/eval.jsonl``. Writes the per-example ``data/evaluation/results.jsonl``,
the headline ``metrics/eval.json`` (execution accuracy, where a database folder holds a test
suite Spider's test-suite accuracy, Spider's exact set match, normalized
match, valid SQL rate, n; for multi-turn data also question- and interaction-level execution
accuracy), ``metrics/eval_breakdown.json`` (the bootstrap interval of execution accuracy, by
difficulty and by outcome; for conversations, by turn), the plot data
``metrics/eval_by_difficulty.csv`` and the pull-request report ``metrics/eval_report.md``.
A BIRD split (rows with ``bird_sha256``) is scored with BIRD's semantics unless
``evaluate.semantics`` says otherwise; its file's version is printed and put in the report.
To score another system's predictions without touching these outputs, use
``text2sql evaluate``.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

from text2sql.evaluation.bird import BirdConfig, resolve_semantics, version_note
from text2sql.evaluation.scoring import (
    EvalConfig,
    EvalItem,
    OutputPaths,
    score_items,
    settings_line,
    write_outputs,
)
from text2sql.io import DataError, iter_jsonl
from text2sql.params import EvaluateParams, load_params

EVAL_FILE = Path("data/prepared/eval.jsonl")
PREDICTIONS = Path("data/predictions/eval.jsonl")
OUTPUTS = OutputPaths(results=Path("data/evaluation/results.jsonl"),
                      metrics=Path("metrics/eval.json"),
                      breakdown=Path("metrics/eval_breakdown.json"),
                      plot=Path("metrics/eval_by_difficulty.csv"),
                      report=Path("metrics/eval_report.md"))


def load_items(eval_file: Path, predictions_file: Path) -> list[EvalItem]:
    """Evaluation examples joined with their predictions by id; every example needs one."""
    predictions: dict[str, str] = {}
    for lineno, row in iter_jsonl(predictions_file):
        if "id" not in row or "sql" not in row:
            missing = "id" if "id" not in row else "sql"
            raise DataError(f"{predictions_file}:{lineno}: missing field {missing!r} "
                            "(every line needs id and sql)")
        predictions[str(row["id"])] = row["sql"] or ""
    items = []
    for lineno, row in iter_jsonl(eval_file):
        for key in ("id", "db_id", "question", "query"):
            if key not in row:
                raise DataError(f"{eval_file}:{lineno}: missing field {key!r} "
                                "(rerun `dvc repro prepare`)")
        if str(row["id"]) not in predictions:
            raise DataError(f"{predictions_file}: no prediction for id {row['id']!r} "
                            f"({eval_file}:{lineno}); rerun `dvc repro infer`")
        items.append(EvalItem(str(row["id"]), row["db_id"], row.get("db_path"), row["question"],
                              row["query"], predictions[str(row["id"])],
                              row.get("bird_difficulty")))
    return items


def bird_files(eval_file: Path) -> list[str]:
    """The sha256 of each BIRD split file the examples come from (none: not a BIRD split)."""
    return sorted({row["bird_sha256"] for _, row in iter_jsonl(eval_file) if "bird_sha256" in row})


def conversation_turns(eval_file: Path) -> dict[str, tuple[str, int]]:
    """``id -> (conversation, turn)`` of the multi-turn examples (empty for single-turn data)."""
    return {str(row["id"]): (str(row["conversation"]), int(row["turn"]))
            for _, row in iter_jsonl(eval_file) if "turn" in row}


def main(params: EvaluateParams) -> None:
    files = bird_files(EVAL_FILE)
    bird = resolve_semantics(params.semantics, bool(files)) == "bird"
    config = EvalConfig(timeout_s=params.timeout_s, max_rows=params.max_rows,
                        workers=params.workers, keep_distinct=params.keep_distinct,
                        gold_timeout_s=params.gold_timeout_s,
                        bird=BirdConfig(params.ves_repeats, params.ves_timeout_s) if bird else None,
                        test_suite=params.test_suite, plug_value=params.plug_value)
    settings = settings_line(config) + version_note(files)
    if files:
        print(f"evaluate: a BIRD split, scored with {'BIRD' if bird else 'Spider'}'s semantics;"
              + version_note(files))
    results = score_items(load_items(EVAL_FILE, PREDICTIONS), config)
    metrics = write_outputs(results, OUTPUTS, title="Evaluation (dvc repro evaluate)",
                            settings=settings, examples=params.report_examples,
                            turns=conversation_turns(EVAL_FILE))
    print(f"evaluate: execution accuracy {metrics['execution_accuracy']}, "
          f"exact set match {metrics['exact_set_match']} on {metrics['n']} examples "
          f"({metrics['gold_errors']} gold errors not scored) -> {OUTPUTS.report}")
    if "soft_f1" in metrics:
        print(f"evaluate: BIRD's Soft-F1 {metrics['soft_f1']}"
              + (f", R-VES {metrics['r_ves']} (machine-dependent)" if "r_ves" in metrics else "")
              + f"; {metrics['gold_timeouts']} gold queries over {params.gold_timeout_s:g} s")
    if "test_suite_accuracy" in metrics:
        print(f"evaluate: test-suite accuracy {metrics['test_suite_accuracy']}")
    if "interaction_execution_accuracy" in metrics:
        print(f"evaluate: question execution accuracy {metrics['question_execution_accuracy']}, "
              f"interaction execution accuracy {metrics['interaction_execution_accuracy']} "
              f"on {metrics['n_interactions']} conversations")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("evaluate"))
    except DataError as e:
        sys.exit(f"evaluate: error: {e}")
