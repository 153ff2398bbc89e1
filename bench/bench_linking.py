"""Schema-linking benchmark: gold-table recall and schema tokens against the full schema.

    python bench/bench_linking.py                      # ../shared/spider-train if present, else data/sample
    python bench/bench_linking.py /path/to/spider --split dev
    python bench/bench_linking.py /path/to/spider --skip-missing-databases   # a trimmed release
    python bench/bench_linking.py --tokenizer Qwen/Qwen2.5-Coder-1.5B-Instruct  # real tokens too
    python bench/bench_linking.py --tokenizer .../vendor/llama.cpp/models/ggml-vocab-qwen2.gguf

Runs the prepare core (``prepare_examples``, the same code as the stage) over
one split of any Spider-layout folder once per linking configuration, side by
side in one run, and prints one row per configuration: recall of the tables the
gold SQL reads (sqlglot), mean schema tokens shown, and the saving against
pasting the full schema. Gold queries that do not run are left out, as in the
stage. Tokens are the model-free count of ``prepare.count_tokens``. With ``--tokenizer``
(a hub id, a model folder, or a ``.gguf`` file: llama-cpp-python's source ships Qwen2's
vocabulary as one) each whole example, prompt and answer in the tokenizer's chat template as
training renders it, is also counted in that tokenizer's tokens: median, 99th percentile and
longest (what ``train.max_seq_length`` and the GPU presets' 2,048 are sized against).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate
from tqdm import tqdm

from text2sql.data.prepare import PrepareStats, prepare_examples
from text2sql.data.prompts import PromptOptions
from text2sql.data.sources import load_spider_split
from text2sql.io import DataError
from text2sql.modeling.lora import complete_tokenizer
from text2sql.modeling.lora import load_tokenizer as load_model_tokenizer
from text2sql.training.masking import tokenize_example

REPO = Path(__file__).resolve().parents[1]
SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"

CONFIGS: list[tuple[str, PromptOptions]] = [
    ("full schema (no linking)", PromptOptions(link_schema=False, link_values=False)),
    ("names + FK paths", PromptOptions(link_values=False, fk_parents="never")),
    ("names + values + FK paths", PromptOptions(fk_parents="never")),
    ("+ FK parents of a lone table (default)", PromptOptions()),
    ("+ FK parents always", PromptOptions(fk_parents="always")),
    ("default, compact format", PromptOptions(schema_format="compact")),
    ("default, M-Schema format", PromptOptions(schema_format="mschema")),
]


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """The folder, ``--split`` and ``--limit`` arguments (``bench_values`` shares them)."""
    parser.add_argument("folder", nargs="?", type=Path,
                        default=SPIDER_TRAIN if SPIDER_TRAIN.is_dir() else REPO / "data" / "sample")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only")


def load_split(args: argparse.Namespace, prog: str, skip_missing: bool = False):
    """The split ``args`` name, or ``None`` after saying on stderr why it cannot be read."""
    try:
        dataset = load_spider_split(args.folder, args.split, skip_missing=skip_missing)
    except DataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None
    if dataset is None:
        print(f"{prog}: error: {args.folder}: no file for split {args.split!r}", file=sys.stderr)
    return dataset


def load_tokenizer(name: str):
    """A hub id or model folder (as training loads it), or a ``.gguf`` file (transformers
    reads its vocabulary, merges and chat template), with a ChatML template where it has none."""
    path = Path(name)
    if path.suffix != ".gguf":
        return load_model_tokenizer(name)
    if not path.is_file():
        raise DataError(f"{path}: no such GGUF file (--tokenizer)")
    from transformers import AutoTokenizer

    return complete_tokenizer(AutoTokenizer.from_pretrained(str(path.parent),
                                                            gguf_file=path.name))


def example_tokens(tokenizer, example: dict) -> int:
    """A prepared example's length in ``tokenizer``'s tokens, as the train stage counts it
    against ``max_seq_length`` (prompt and answer in the chat template)."""
    answer = example["completion"][0]["content"]
    return len(tokenize_example(tokenizer, example["prompt"], answer).input_ids)


def percentile(sorted_values: list[int], share: float) -> int:
    """The value at ``share`` of a sorted list (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(parser)
    parser.add_argument("--skip-missing-databases", action="store_true",
                        help="leave out (count and list) the examples whose SQLite file is "
                             "missing, instead of stopping at the first")
    parser.add_argument("--tokenizer", default=None,
                        help="also count each whole example in this tokenizer's tokens: a hub "
                             "id, a model folder or a .gguf file")
    args = parser.parse_args(argv)
    dataset = load_split(args, "bench_linking", args.skip_missing_databases)
    if dataset is None:
        return 2
    try:
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    except (DataError, OSError) as e:
        print(f"bench_linking: error: {e}", file=sys.stderr)
        return 2
    examples = dataset.examples[: args.limit]
    rows = []
    for name, options in CONFIGS:
        stats = PrepareStats()
        start = time.perf_counter()
        prepared = list(prepare_examples(tqdm(examples, desc=name, leave=False, disable=None),
                                         dataset.schemas, options=options, stats=stats))
        seconds = time.perf_counter() - start
        m = stats.as_metrics("x")
        rows.append([name, m["x_table_recall"], m["x_tables_shown_mean"], m["x_schema_tokens_mean"],
                     m["x_full_schema_tokens_mean"], f"{m['x_schema_token_reduction']:.1%}",
                     m["x_prompt_tokens_mean"], m["x_prompt_tokens_max"],
                     f"{m['x_full_schema_rate']:.1%}", f"{1000 * seconds / max(stats.read, 1):.2f}"])
        if tokenizer is not None and prepared:
            lengths = sorted(example_tokens(tokenizer, ex) for ex in prepared)
            rows[-1] += [percentile(lengths, 0.5), percentile(lengths, 0.99), lengths[-1]]
    left_out = ""
    if dataset.skipped:
        per_db = Counter(db for _, db in dataset.skipped)
        left_out = (f", {len(dataset.skipped)} left out (no SQLite file): "
                    + ", ".join(f"{db} ({n})" for db, n in sorted(per_db.items())))
    print(f"{args.folder} [{args.split}]: {stats.n} examples "
          f"({stats.read - stats.n} dropped: gold SQL that does not run{left_out}), "
          f"{len({e.db_id for e in examples})} databases\n")
    print(tabulate(rows, headers=["linking", "recall", "tables", "schema tok", "full schema tok",
                                  "fewer tok", "prompt tok", "max prompt", "full-schema rate",
                                  "ms/question"]
                   + (["example tok p50", "p99", "max"] if tokenizer is not None else []),
                   tablefmt="github"))
    if tokenizer is not None:
        print(f"\nexample tok: whole examples (chat template, prompt and answer) in the tokens of "
              f"{args.tokenizer} ({len(tokenizer)} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
