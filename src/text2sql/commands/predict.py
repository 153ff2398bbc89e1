"""``text2sql predict``: run a trained adapter on any JSONL file of questions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from text2sql.commands import add_adapter_argument, resolve_adapter

DESCRIPTION = """\
Predict SQL for every question of a JSONL file with a trained adapter, outside
the DVC pipeline: nothing under data/ or metrics/ is touched, only --output.

Each input line is a JSON object with "question" and "db_id" (optional: "id",
"evidence"). The database of each question comes from --db: one SQLite file for
every question (db_id may then be left out), or a folder of Spider-style
databases (<folder>/<db_id>/<db_id>.sqlite; a tables.json beside them is used
for the schema, as in the prepare stage). Without --db, lines may carry a
"db_path", or be the prepare stage's own rows (with "prompt").

Prompts are built like the prepare stage's (the prepare: settings of --params)
and generation follows the infer: settings (infer.load_in_4bit included), which
the options below override.
Each output line holds id, db_id, question, raw (the model's text), sql (the
query extracted from it) and seconds; with --num-samples N > 1 also the
candidates and their votes; with --revise-rounds N the follow-up turns each answer took.
"""

EPILOG = """\
examples:
  text2sql predict questions.jsonl --db shop.sqlite -o predictions.jsonl
  text2sql predict dev.jsonl --db ../spider/database -o dev_predictions.jsonl --num-samples 5
  text2sql predict questions.jsonl --db shop.sqlite -o p.jsonl \\
      --backend llama.cpp --model models/export/model-q4_k_m.gguf
"""


def add_backend_arguments(p: Any) -> None:
    """``--backend`` and ``--model``: what ``predict`` and ``ask`` generate with."""
    p.add_argument("--backend", choices=("hf", "llama.cpp"), default=None,
                   help="hf: the adapter through transformers; llama.cpp: a GGUF file "
                        "(--model), the fast CPU path (default: infer.backend, else hf)")
    p.add_argument("--model", type=Path, metavar="FILE.gguf",
                   help="the GGUF file the llama.cpp backend runs (the export stage writes "
                        "them to models/export/)")


def model_path(args: argparse.Namespace, backend: str) -> Path:
    """The adapter folder (hf) or the GGUF file (llama.cpp) the command runs."""
    from text2sql.io import DataError

    if backend == "llama.cpp":
        if args.model is None:
            raise DataError("--backend llama.cpp needs --model FILE.gguf (made by the export "
                            "stage: dvc exp run -S 'export.formats=[gguf-q4_k_m]')")
        return args.model
    if args.model is not None:
        raise DataError("--model FILE.gguf is for --backend llama.cpp; the hf backend runs "
                        "--adapter")
    return resolve_adapter(args.adapter, f"text2sql {args.command}")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="predict SQL for a JSONL file of questions with a trained adapter",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="JSONL file of questions")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="where to write the predictions (JSONL)")
    p.add_argument("--db", type=Path, metavar="PATH",
                   help="one SQLite file for all questions, or a folder of Spider-style databases")
    add_adapter_argument(p)
    add_backend_arguments(p)
    p.add_argument("--metrics", type=Path, metavar="FILE",
                   help="also write metrics (JSON) here: throughput, and the base model "
                        "and precision used")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                   help="prepare: and infer: settings to use when the file exists "
                        "(default: %(default)s)")
    for flag, kind, what in (("--batch-size", int, "sequences generated together"),
                             ("--max-new-tokens", int, "longest answer in tokens"),
                             ("--num-samples", int, "1: greedy; N > 1: sample N, vote by result"),
                             ("--temperature", float, "sampling temperature (N > 1)"),
                             ("--seed", int, "seed of the sampling"),
                             ("--timeout", float, "seconds per candidate query when voting"),
                             ("--revise-rounds", int, "ask a failing or empty query again, up "
                                                      "to N times")):
        p.add_argument(flag, type=kind, default=None, help=f"{what} (default: from infer:)")
    p.set_defaults(func=run)


OVERRIDES = {"batch_size": "batch_size", "max_new_tokens": "max_new_tokens",
             "num_samples": "num_samples", "temperature": "temperature", "seed": "seed",
             "timeout": "timeout_s", "backend": "backend", "revise_rounds": "revise_rounds"}


def run(args: argparse.Namespace) -> int:
    from text2sql.ask.questions import prepare_settings, rows_from_questions
    from text2sql.inference.predict import check_rows, predict, runs_candidates
    from text2sql.io import iter_jsonl, write_json, write_jsonl
    from text2sql.params import InferParams, load_params, parse_section

    if args.output.resolve() == args.input.resolve():
        from text2sql.io import DataError

        raise DataError(f"{args.output}: the output would overwrite the input; choose another -o")
    infer = load_params("infer", args.params) if args.params.is_file() else InferParams()
    changes = {key: getattr(args, arg) for arg, key in OVERRIDES.items()
               if getattr(args, arg) is not None}
    params = parse_section(InferParams, {**infer.model_dump(), **changes}, "infer",
                           "command-line options")
    numbered = rows_from_questions(iter_jsonl(args.input), args.input, args.db,
                                   prepare_settings(args.params))
    rows = check_rows(numbered, args.input, need_db=runs_candidates(params))
    predictions, metrics = predict(rows, model_path(args, params.backend), params)
    write_jsonl(args.output, predictions)
    if args.metrics:
        write_json(args.metrics, metrics)
    print(f"predict: {metrics['n']} predictions, {metrics['sequences_per_s']} sequences/s "
          f"-> {args.output}", file=sys.stderr)
    return 0
