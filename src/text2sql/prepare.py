"""Turn a dataset into schema-aware chat examples (the core of the ``prepare`` stage)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from text2sql.datasets import Example
from text2sql.linking import select_tables
from text2sql.prompts import build_prompt_messages
from text2sql.schema import Schema, to_compact, to_ddl
from text2sql.sql import referenced_tables


def schema_text(schema: Schema, tables: list[str], fmt: str) -> str:
    return to_ddl(schema, tables) if fmt == "ddl" else to_compact(schema, tables)


def count_tokens(text: str) -> int:
    """A model-free token count: words, numbers and punctuation marks."""
    import re

    return len(re.findall(r"\w+|[^\w\s]", text))


@dataclass
class PrepareStats:
    n: int = 0
    gold_tables: int = 0
    gold_tables_found: int = 0
    full_schema: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    full_prompt_tokens: list[int] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        def mean(xs: list[int]) -> float:
            return round(sum(xs) / len(xs), 2) if xs else 0.0

        return {
            f"{prefix}_n": self.n,
            f"{prefix}_table_recall": round(self.gold_tables_found / self.gold_tables, 4)
            if self.gold_tables else 1.0,
            f"{prefix}_full_schema_rate": round(self.full_schema / self.n, 4) if self.n else 0.0,
            f"{prefix}_prompt_tokens_mean": mean(self.prompt_tokens),
            f"{prefix}_prompt_tokens_max": max(self.prompt_tokens, default=0),
            f"{prefix}_full_schema_tokens_mean": mean(self.full_prompt_tokens),
            f"{prefix}_dropped": sum(self.dropped.values()),
        }


def prepare_examples(
    examples: Iterable[Example],
    schemas: dict[str, Schema],
    *,
    schema_format: str = "ddl",
    link_schema: bool = True,
    full_schema_max_tables: int = 0,
    stats: PrepareStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one prompt/completion record per example, linking each to its tables."""
    stats = stats if stats is not None else PrepareStats()
    for ex in examples:
        schema = schemas[ex.db_id]
        if link_schema:
            tables, full = select_tables(ex.question, schema,
                                         full_schema_max_tables=full_schema_max_tables)
        else:
            tables, full = schema.table_names, True
        text = schema_text(schema, tables, schema_format)
        prompt = build_prompt_messages(ex.question, text, ex.evidence)
        stats.n += 1
        stats.full_schema += full
        stats.prompt_tokens.append(count_tokens(prompt[1]["content"]))
        stats.full_prompt_tokens.append(
            count_tokens(schema_text(schema, schema.table_names, schema_format)))
        gold = referenced_tables(ex.query)
        if gold is not None:
            shown = {t.lower() for t in tables}
            stats.gold_tables += len(gold)
            stats.gold_tables_found += len(gold & shown)
        yield {
            "id": ex.id,
            "db_id": ex.db_id,
            "db_path": ex.db_path,
            "question": ex.question,
            "query": ex.query,
            "tables": tables,
            "prompt": prompt,
            "completion": [{"role": "assistant", "content": ex.query}],
        }
