"""ChatML prompts: a system instruction, the (linked) schema, matched values and the question.

``build_prompt_messages`` writes the conversation from a finished schema text;
``make_prompt`` does the whole job for one question (link the schema, read
matched values and sample rows, serialize, write the messages), and is what both
the ``prepare`` stage and inference on a new question call, so training and
inference prompts are built the same way.

A follow-up question (multi-turn data, ``text2sql chat``) gets its conversation's
earlier turns as user/assistant turns before it: the schema goes with the first
turn shown, each earlier question is followed by its SQL, newest turns kept within
``max_history_turns`` and ``max_history_tokens``. Linking reads every question of
the conversation. Without history the prompt is the single-turn one, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, get_args

from text2sql.data.linking import add_fk_parents, select_tables
from text2sql.params import Answer, SchemaFormat, ValueRetrieval
from text2sql.sql.schema import Schema, to_compact, to_ddl, to_mschema

SCHEMA_FORMATS = get_args(SchemaFormat)
VALUE_RETRIEVAL = get_args(ValueRetrieval)

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """A model-free token count: words, numbers and punctuation marks.

    The same count for every model, so prompt lengths compare across runs; a
    BPE tokenizer gives about as many tokens on SQL and English.
    """
    return len(_TOKEN.findall(text))


class HistoryTurn(Protocol):
    """An earlier turn: ``datasets.Turn`` or anything with a question and its query."""

    question: str
    query: str


SYSTEM_PROMPT = (
    "You translate questions into SQLite queries. Answer with a single SQL query "
    "that uses only the tables given."
)
# prepare.answer: reasoning. OmniSQL's answer format: the steps, then the query in a
# ```sql block (its process_dataset.py prompt asks for exactly that).
REASONING_SYSTEM_PROMPT = (
    "You translate questions into SQLite queries that use only the tables given. Think "
    "step by step, then give the final SQL query in a ```sql code block."
)
ANSWERS = get_args(Answer)
_SQL_BLOCK = re.compile(r"```sql\s*(.*?)\s*```", re.S | re.I)


def system_prompt(answer: str = "sql") -> str:
    """The system instruction for an answer format (``prepare.answer``)."""
    return REASONING_SYSTEM_PROMPT if answer == "reasoning" else SYSTEM_PROMPT


def reasoning_answer(reasoning: str, sql: str) -> str:
    """The assistant answer for ``prepare.answer: reasoning``: the chain of thought, then
    ``sql`` in a ```sql block.

    A chain of thought whose last ```sql block is already ``sql`` (SynSQL's ``cot`` is
    written so) is kept as it is; any other gets the block appended.
    """
    text = reasoning.strip()
    blocks = _SQL_BLOCK.findall(text)
    if blocks and _same_text(blocks[-1], sql):
        return text
    return f"{text}\n\n```sql\n{sql.strip()}\n```"


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).rstrip(";").strip() == " ".join(b.split()).rstrip(";").strip()


def format_values(values: list[tuple[str, str, str]]) -> str:
    """``table.column = 'value'`` hints, ``; ``-separated."""
    return "; ".join(f"{t}.{c} = '{v.replace(chr(39), chr(39) * 2)}'" for t, c, v in values)


def build_user_message(question: str, schema_text: str, evidence: str | None = None,
                       values: list[tuple[str, str, str]] | None = None) -> str:
    """The user turn: schema, matched values, evidence (BIRD), then the question."""
    parts = [f"Schema:\n{schema_text}"]
    if values:
        parts.append(f"Values: {format_values(values)}")
    if evidence:
        parts.append(f"Evidence: {evidence}")
    parts.append(f"Question: {question}")
    return "\n\n".join(parts)


def build_prompt_messages(
    question: str, schema_text: str, evidence: str | None = None,
    values: list[tuple[str, str, str]] | None = None, answer: str = "sql",
) -> list[dict[str, str]]:
    """The conversation up to, not including, the assistant's answer."""
    return [
        {"role": "system", "content": system_prompt(answer)},
        {"role": "user", "content": build_user_message(question, schema_text, evidence, values)},
    ]


@dataclass(frozen=True)
class PromptOptions:
    """How a question's prompt is built: the ``prepare:`` params that shape prompts."""

    schema_format: str = "ddl"        # ddl | compact | mschema
    link_schema: bool = True          # show only linked tables (+ FK paths)
    full_schema_max_tables: int = 0   # databases this small always get the full schema
    link_values: bool = True          # tables holding a value the question mentions are linked
    value_hints: int = 5              # matched values shown in the prompt, at most (0: none)
    sample_rows: int = 0              # rows shown per table (0: none)
    fk_parents: str = "single"        # show tables linked ones point to: never | single | always
    max_history_turns: int = 5        # earlier turns of a conversation shown, newest first
    max_history_tokens: int = 400     # ... and at most this many tokens of them (count_tokens)
    value_retrieval: str = "fuzzy"    # exact (stemmed words) | fuzzy (+ typos, forms, abbreviations)
    answer: str = "sql"               # sql | reasoning (steps, then the SQL): the system prompt

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {', '.join(ANSWERS)}, got {self.answer!r}")
        if self.value_retrieval not in VALUE_RETRIEVAL:
            raise ValueError(f"value_retrieval must be one of {', '.join(VALUE_RETRIEVAL)}, "
                             f"got {self.value_retrieval!r}")
        if self.schema_format not in SCHEMA_FORMATS:
            raise ValueError(f"schema_format must be one of {', '.join(SCHEMA_FORMATS)}, "
                             f"got {self.schema_format!r}")


@dataclass
class LinkedPrompt:
    """A question's prompt and how it was made."""

    messages: list[dict[str, str]]
    tables: list[str]                 # tables shown, in schema order
    full_schema: bool                 # every table shown (fallback, small database, or no linking)
    schema_text: str
    values: list[tuple[str, str, str]] = field(default_factory=list)  # (table, column, value)
    history_turns: int = 0            # earlier turns shown (after trimming)


def schema_text(schema: Schema, tables: list[str], fmt: str,
                sample_rows: dict[str, list[tuple]] | None = None,
                examples: dict[str, dict[str, list]] | None = None) -> str:
    """The schema of ``tables`` in format ``fmt`` (``ddl``, ``compact`` or ``mschema``, which
    alone shows ``examples``: a few stored values per column)."""
    if fmt == "mschema":
        return to_mschema(schema, tables, sample_rows, examples)
    return (to_ddl if fmt == "ddl" else to_compact)(schema, tables, sample_rows)


def schema_examples(db_path: str | Path | None, schema: Schema, tables: list[str], fmt: str
                    ) -> dict[str, dict[str, list]] | None:
    """The example values ``fmt`` shows (M-Schema's), read from ``db_path``; else ``None``."""
    if fmt != "mschema" or db_path is None:
        return None
    from text2sql.data.values import column_examples

    return column_examples(db_path, schema, tables)


def trim_history(history: Sequence[HistoryTurn], max_turns: int, max_tokens: int
                 ) -> list[HistoryTurn]:
    """The newest earlier turns that fit in ``max_turns`` turns and ``max_tokens`` tokens.

    Whole turns only (a question without its SQL would teach the wrong thing); a
    turn that alone exceeds the budget leaves the history empty.
    """
    kept: list[HistoryTurn] = []
    tokens = 0
    for turn in reversed(history[-max_turns:] if max_turns > 0 else []):
        tokens += count_tokens(turn.question) + count_tokens(turn.query)
        if tokens > max_tokens:
            break
        kept.append(turn)
    return kept[::-1]


def make_prompt(question: str, schema: Schema, db_path: str | Path | None = None,
                evidence: str | None = None, options: PromptOptions = PromptOptions(),
                history: Sequence[HistoryTurn] = ()) -> LinkedPrompt:
    """Link ``question`` to ``schema`` and build its prompt.

    Stored values and sample rows are read from ``db_path``, a SQLite file or a
    :class:`text2sql.ask.postgres.PostgresDatabase` (skipped without one).
    Only the questions (and evidence) are looked at, never a gold query: with
    ``history`` (the conversation's earlier turns, oldest first), linking reads every
    question of the conversation, and the kept turns (:func:`trim_history`) precede
    the question as user/assistant turns.
    """
    from text2sql.data.values import sample_rows as read_rows
    from text2sql.data.values import value_index

    # A follow-up ("only those from Boston") names few tables itself: link the conversation.
    asked = " ".join([t.question for t in history] + [question])
    matches, retrieved = [], []
    if db_path is not None and (options.link_values or options.value_hints):
        index = value_index(db_path)
        matches = index.match(f"{asked} {evidence}" if evidence else asked)
        if options.value_retrieval == "fuzzy" and options.value_hints:
            retrieved = index.retrieve(f"{asked} {evidence}" if evidence else asked)
    if options.link_schema:
        hits = [m.table for m in matches] if options.link_values else []
        # BIRD's evidence names columns and values the answer needs: link on it too.
        tables, full = select_tables(f"{asked} {evidence}" if evidence else asked, schema,
                                     full_schema_max_tables=options.full_schema_max_tables,
                                     value_hits=hits, fk_parents=options.fk_parents)
    else:
        tables, full = schema.table_names, True
    shown = {t.lower() for t in tables}
    # Fuzzy matches only add hints after the exact ones; they do not link tables.
    values = [(m.table, m.column, m.value) for m in matches + retrieved
              if m.table.lower() in shown]
    values = list(dict.fromkeys(values))[: options.value_hints]
    rows = None
    if db_path is not None and options.sample_rows > 0:
        rows = {t: read_rows(db_path, t, options.sample_rows) for t in tables}
    text = schema_text(schema, tables, options.schema_format, rows,
                       schema_examples(db_path, schema, tables, options.schema_format))
    kept = trim_history(history, options.max_history_turns, options.max_history_tokens)
    messages = conversation_messages(question, text, kept, evidence, values, options.answer)
    return LinkedPrompt(messages, tables, full, text, values, len(kept))


def conversation_messages(question: str, schema_text: str, history: Sequence[HistoryTurn],
                          evidence: str | None = None,
                          values: list[tuple[str, str, str]] | None = None,
                          answer: str = "sql") -> list[dict[str, str]]:
    """The single-turn messages when ``history`` is empty; else the schema, values and
    evidence with the first earlier question, each earlier SQL as an assistant turn,
    and each later question as ``Question: ...``."""
    if not history:
        return build_prompt_messages(question, schema_text, evidence, values, answer)
    first, *rest = history
    messages = build_prompt_messages(first.question, schema_text, evidence, values, answer)
    messages.append({"role": "assistant", "content": first.query})
    for turn in rest:
        messages += [{"role": "user", "content": f"Question: {turn.question}"},
                     {"role": "assistant", "content": turn.query}]
    messages.append({"role": "user", "content": f"Question: {question}"})
    return messages


__all__ = ["REASONING_SYSTEM_PROMPT", "SYSTEM_PROMPT", "LinkedPrompt", "PromptOptions", "add_fk_parents",
           "build_prompt_messages", "build_user_message", "conversation_messages",
           "count_tokens", "format_values", "make_prompt", "reasoning_answer", "schema_examples",
           "schema_text", "system_prompt", "trim_history"]
