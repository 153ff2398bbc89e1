"""infer: generate SQL for every evaluation question with the trained adapter.

    dvc repro infer
    dvc exp run -S infer.batch_size=32
    dvc exp run -S infer.num_samples=5     # self-consistency: sample 5, vote by execution result
    dvc exp run -S infer.revise_rounds=2   # a failing or empty query is asked again, up to 2 times
    dvc exp run -S infer.load_in_4bit=true # evaluate the base in 4-bit on purpose (CUDA)
    dvc exp run -S infer.history=predicted # conversations: earlier turns show the model's own SQL
    dvc exp run -S infer.num_processes=4   # questions split across 4 processes (torchrun, 4 GPUs)
    python stages/infer.py                 # the same, outside DVC

Reads the ``infer:`` section of params.yaml, ``data/prepared/eval.jsonl`` and
``models/aligned/`` (the align stage's adapter). Writes ``data/predictions/eval.jsonl``
(id, db_id, question, raw output, extracted sql; with num_samples > 1 also the candidates and votes;
with revise_rounds > 0 the follow-up turns each answer took), ``metrics/infer.json`` (n,
generated tokens, the base model, precision and 4-bit setting the predictions were made with,
and with revise_rounds > 0 how many candidates were asked again and how many then ran) and,
not tracked, ``metrics/runtime/infer.json`` (sequences/s, generated tokens/s, load and
generation seconds).
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

from text2sql.io import DataError, iter_jsonl, without_runtime, write_jsonl, write_metrics
from text2sql.params import InferParams, load_params

EVAL_FILE = Path("data/prepared/eval.jsonl")
ADAPTER_DIR = Path("models/aligned")  # the align stage's output (method none: the SFT adapter)
OUT_FILE = Path("data/predictions/eval.jsonl")
METRICS = Path("metrics/infer.json")


def main(params: InferParams) -> None:
    if params.backend != "hf":
        raise DataError(f"infer.backend {params.backend!r}: the infer stage runs the adapter "
                        f"({ADAPTER_DIR}) through transformers; the export stage measures each "
                        "GGUF file's EX (models/export/README.md), and `text2sql predict "
                        "--backend llama.cpp --model FILE.gguf` runs one on any questions")
    if params.revise_rounds and params.num_processes > 1:
        raise DataError("infer.revise_rounds > 0 asks failing candidates again in one "
                        "process: set infer.num_processes=1, or infer.revise_rounds=0")
    if params.history == "predicted" and params.num_processes > 1:
        raise DataError("infer.history=predicted answers a conversation's turns in order, in "
                        "one process: set infer.num_processes=1, or infer.history=gold")
    from text2sql.runtime.quiet import quiet_known_warnings
    from text2sql.runtime.reproducibility import pin_cpu_numerics

    quiet_known_warnings()
    # Every process keeps the one-process thread count: the same kernels, the same answers.
    pin_cpu_numerics()  # before anything imports torch
    from text2sql.runtime.distributed import start_processes

    start_processes("infer.num_processes", params.num_processes)
    from text2sql.inference.predict import check_rows, predict, runs_candidates

    rows = check_rows(iter_jsonl(EVAL_FILE), EVAL_FILE, need_db=runs_candidates(params))
    predicted = predict(rows, ADAPTER_DIR, params)
    if predicted is None:  # a process other than process 0 of a data-parallel run
        return
    predictions, metrics = predicted
    write_jsonl(OUT_FILE, (without_runtime(p) for p in predictions))
    write_metrics(METRICS, metrics)
    print(f"infer: {metrics['n']} predictions, {metrics['sequences_per_s']} sequences/s, "
          f"{metrics['generated_tokens_per_s']} tokens/s -> {OUT_FILE}")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("infer"))
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"infer: error: {e}")
