"""export: the trained model as merged weights, GGUF files and an Ollama Modelfile.

    dvc repro export                                             # export.formats: [] is a no-op
    dvc exp run -S 'export.formats=[merged, gguf-f16, gguf-q8_0, gguf-q4_k_m]'
    ollama create text2sql -f models/export/Modelfile            # then, on a machine with Ollama
    python stages/export.py                                      # the same, outside DVC

Reads the ``export:`` and ``infer:`` sections of params.yaml, ``models/aligned/``,
``data/prepared/eval.jsonl`` and ``data/predictions/eval.jsonl`` (infer's answers, the
reference the GGUF files are held to when infer decoded greedily). Writes ``models/export/``: ``merged/`` (base + adapter,
loadable with ``AutoModelForCausalLM``), ``model-<type>.gguf`` files, ``Modelfile`` (FROM
the smallest GGUF) and ``README.md`` (each file's size and sha256, each format's EX), plus
``metrics/export.json``. The GGUF files are checked against transformers on the evaluation
questions first (see :mod:`text2sql.export.pipeline`); a failed check writes nothing.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

from text2sql.io import DataError, atomic_path, iter_jsonl, write_metrics
from text2sql.params import ExportParams, InferParams, load_params

ADAPTER_DIR = Path("models/aligned")  # the model infer evaluates: the align stage's output
EVAL_FILE = Path("data/prepared/eval.jsonl")
PREDICTIONS = Path("data/predictions/eval.jsonl")  # the infer stage's, of the same adapter
OUT_DIR = Path("models/export")
METRICS = Path("metrics/export.json")


def main(params: ExportParams, infer: InferParams) -> None:
    from text2sql.export.pipeline import empty_export

    if not params.formats:
        with atomic_path(OUT_DIR, is_dir=True) as tmp:
            empty_export(tmp)
        write_metrics(METRICS, {"formats": 0})
        print(f"export: no format requested (export.formats is empty) -> {OUT_DIR}")
        return

    from text2sql.runtime.quiet import quiet_known_warnings
    from text2sql.runtime.reproducibility import pin_cpu_numerics

    quiet_known_warnings()
    pin_cpu_numerics()  # before anything imports torch
    from text2sql.export.pipeline import export_model

    rows = [row for _, row in iter_jsonl(EVAL_FILE)][:params.max_eval_examples]
    reference = None
    if infer.num_samples == 1:  # greedy: the reference the files must reproduce
        reference = {p["id"]: p["sql"] for _, p in iter_jsonl(PREDICTIONS)}
    else:
        print(f"export: infer.num_samples is {infer.num_samples} (voting), so its answers are "
              "not greedy ones: the merged model answers the questions through transformers "
              "for the reference", file=sys.stderr)
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        metrics = export_model(ADAPTER_DIR, tmp, params.formats, rows,
                               max_new_tokens=infer.max_new_tokens, batch_size=infer.batch_size,
                               min_same_sql=params.min_same_sql, max_ex_drop=params.max_ex_drop,
                               reference_sql=reference)
    write_metrics(METRICS, {"formats": len(params.formats), **metrics})
    accuracies = ", ".join(f"{k.removeprefix('execution_accuracy_')} {v}"
                           for k, v in metrics.items() if k.startswith("execution_accuracy_"))
    print(f"export: {', '.join(params.formats)} -> {OUT_DIR} (EX: {accuracies})")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("export"), load_params("infer"))
    except DataError as e:
        sys.exit(f"export: error: {e}")
