"""Value-retrieval benchmark: are the text literals of the gold SQL shown in the prompt?

    python bench/bench_values.py                        # ../shared/spider-train, train split
    python bench/bench_values.py /path/to/spider --limit 2000

Runs the prepare core (``prepare_examples``, the stage's code) over one split once per
configuration, side by side in one run: ``prepare.value_retrieval`` exact and fuzzy (the
default), and the M-Schema format with each. For the text literals the gold SQL compares a
column with (``= 'x'``, ``LIKE '%x%'``, ``IN ('x', ...)``; numbers left out) it prints:

- literal recall: share of literals the prompt shows with their exact spelling (the whole
  user message: question, schema and value hints, case-sensitive, as whole words): what the
  model can copy;
- hint recall: share shown as a value hint (``t.c = 'v'`` with ``v`` the literal, any case;
  for LIKE, containing it): what retrieval found, with the column that holds it;
- all shown: share of questions with literals whose every literal the prompt shows;
- prompt tokens (mean), hints per prompt, table recall, milliseconds per question.

Gold queries that do not run are left out, as in the stage.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from tabulate import tabulate
from tqdm import tqdm

from text2sql.data.prepare import PrepareStats, prepare_examples
from text2sql.data.prompts import PromptOptions

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_linking import add_split_arguments, load_split  # noqa: E402

CONFIGS: list[tuple[str, PromptOptions]] = [
    ("exact", PromptOptions(value_retrieval="exact")),
    ("fuzzy (default)", PromptOptions(value_retrieval="fuzzy")),
    ("mschema, exact", PromptOptions(schema_format="mschema", value_retrieval="exact")),
    ("mschema, fuzzy", PromptOptions(schema_format="mschema", value_retrieval="fuzzy")),
]

# Spider writes strings in single or double quotes; a comparison, LIKE, or an IN list of them.
_COMPARED = re.compile(r"""((?<![!<>])=|\blike\b)\s*(['"])(.*?)\2""", re.IGNORECASE)
_STRING = r"""(?:'[^']*'|"[^"]*")"""
_IN_LIST = re.compile(rf"\bin\s*\(\s*({_STRING}(?:\s*,\s*{_STRING})*)\s*\)", re.IGNORECASE)
_QUOTED = re.compile(r"""(['"])(.*?)\1""")
_NUMBER = re.compile(r"[\d.\-]+")


def gold_literals(sql: str) -> list[tuple[str, bool]]:
    """(literal, from LIKE) for each text literal ``sql`` compares a column with."""
    found = [(m.group(3), m.group(1).lower() == "like") for m in _COMPARED.finditer(sql)]
    for m in _IN_LIST.finditer(sql):
        found += [(q.group(2), False) for q in _QUOTED.finditer(m.group(1))]
    out = []
    for text, like in found:
        text = text.strip("%").strip() if like else text
        if text and not _NUMBER.fullmatch(text):
            out.append((text, like))
    return out


def spacing(text: str) -> str:
    """Spider's gold SQL is tokenized (``'Hiram ,  Georgia'`` for ``'Hiram, Georgia'``)."""
    return re.sub(r"\s+", " ", re.sub(r"\s+([,.;:!?)])", r"\1", text))


def in_text(literal: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(spacing(literal)) + r"(?!\w)", spacing(text)) \
        is not None


def in_hints(literal: str, like: bool, hints: list[str]) -> bool:
    lit = spacing(literal).lower()
    return any(lit in spacing(h).lower() if like else lit == spacing(h).lower() for h in hints)


def measure(examples: list, schemas: dict, options: PromptOptions, name: str) -> dict[str, float]:
    stats = PrepareStats()
    literals = shown = hinted = with_literals = all_shown = hints = 0
    start = time.perf_counter()
    for row in prepare_examples(tqdm(examples, desc=name, leave=False, disable=None), schemas,
                                options=options, stats=stats):
        user = row["prompt"][1]["content"]
        values = [v for part in user.split("\n\n") if part.startswith("Values: ")
                  for v in re.findall(r" = '((?:[^']|'')*)'", part)]
        values = [v.replace("''", "'") for v in values]
        hints += len(values)
        found = [(in_text(lit, user), in_hints(lit, like, values))
                 for lit, like in gold_literals(row["query"])]
        literals += len(found)
        shown += sum(f[0] for f in found)
        hinted += sum(f[1] for f in found)
        if found:
            with_literals += 1
            all_shown += all(f[0] for f in found)
    seconds = time.perf_counter() - start
    m = stats.as_metrics("x")
    return {"literals": literals, "literal_recall": shown / max(literals, 1),
            "hint_recall": hinted / max(literals, 1),
            "all_shown": all_shown / max(with_literals, 1), "questions": with_literals,
            "prompt_tokens": m["x_prompt_tokens_mean"], "hints": hints / max(stats.n, 1),
            "table_recall": m["x_table_recall"], "n": stats.n,
            "ms": 1000 * seconds / max(stats.read, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(parser)
    parser.add_argument("--configs", default=None,
                        help="comma-separated row numbers of the table to run (default: all)")
    args = parser.parse_args(argv)
    dataset = load_split(args, "bench_values")
    if dataset is None:
        return 2
    examples = dataset.examples[: args.limit]
    configs = CONFIGS if args.configs is None else [
        CONFIGS[int(i)] for i in args.configs.split(",")]
    rows, base = [], None
    for name, options in configs:
        m = measure(examples, dataset.schemas, options, name)
        base = base or m
        rows.append([name, f"{m['literal_recall']:.4f}", f"{m['hint_recall']:.4f}",
                     f"{m['all_shown']:.4f}", m["prompt_tokens"],
                     f"{m['prompt_tokens'] / base['prompt_tokens'] - 1:+.1%}",
                     f"{m['hints']:.2f}", m["table_recall"], f"{m['ms']:.2f}"])
    print(f"{args.folder} [{args.split}]: {base['n']} examples, {len({e.db_id for e in examples})}"
          f" databases; {base['literals']} gold text literals in {base['questions']} questions\n")
    print(tabulate(rows, headers=["values", "literal recall", "hint recall", "all shown",
                                  "prompt tok", "vs first", "hints", "table recall",
                                  "ms/question"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
