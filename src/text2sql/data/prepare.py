"""Turn a dataset into schema-aware chat examples (the core of the ``prepare`` stage).

Every example's prompt is built by ``prompts.make_prompt`` from its question
(and evidence, and for a follow-up its conversation's earlier turns) alone. The
gold SQL is used only to measure linking (the tables it reads, found with sqlglot,
that the prompt shows) and to drop examples whose gold SQL does not run on their
database, which are reported and counted.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any

from text2sql.data.prompts import (
    PromptOptions,
    count_tokens,
    make_prompt,
    reasoning_answer,
    schema_examples,
)
from text2sql.data.prompts import schema_text as _schema_text
from text2sql.data.sources import BadConversation, Example
from text2sql.io import DataError
from text2sql.sql.parse import referenced_tables, run_error
from text2sql.sql.schema import Schema
from text2sql.sql.sqlite import open_readonly

# Why an example is dropped; every reason is always in the metrics (0 when none).
DROP_REASONS = ("empty_question", "empty_query", "gold_sql_error")


def schema_text(schema: Schema, tables: list[str], fmt: str) -> str:
    """The schema of ``tables`` as DDL, compact or M-Schema text, without example values (see
    ``prompts.schema_text``)."""
    return _schema_text(schema, tables, fmt)


@dataclass
class DroppedExample:
    id: str
    db_id: str
    reason: str
    detail: str


@dataclass
class PrepareStats:
    """Running totals of one split: counts, linking recall, prompt lengths, drops."""

    read: int = 0
    n: int = 0
    gold_tables: int = 0
    gold_tables_found: int = 0
    gold_unparsed: int = 0
    full_schema: int = 0
    tables_shown: int = 0
    prompt_tokens_sum: int = 0
    prompt_tokens_max: int = 0
    full_prompt_tokens_sum: int = 0
    full_prompt_tokens_max: int = 0
    schema_tokens_sum: int = 0
    full_schema_tokens_sum: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_examples: list[DroppedExample] = field(default_factory=list)
    max_kept_drops: int = 1000  # dropped examples remembered for the report
    # Multi-turn data only (their metrics are written only when there is some):
    conversations: set = field(default_factory=set)  # conversations with an example kept
    follow_ups: int = 0  # examples after the first turn
    history_turns_sum: int = 0  # earlier turns shown in prompts, after trimming
    history_turns_cut: int = 0  # earlier turns left out by max_history_turns / _tokens
    bad_conversations: list[BadConversation] = field(default_factory=list)

    def drop(self, ex: Example, reason: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        if len(self.dropped_examples) < self.max_kept_drops:
            self.dropped_examples.append(DroppedExample(ex.id, ex.db_id, reason, detail))

    def merge(self, other: PrepareStats) -> None:
        """Add the counts of ``other`` (the next examples of the same split) to these."""
        for f in fields(self):  # every count adds up, every *_max is the larger one
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, int) and f.name != "max_kept_drops":
                setattr(self, f.name, max(mine, theirs) if f.name.endswith("_max")
                        else mine + theirs)
        self.dropped.update(other.dropped)
        room = self.max_kept_drops - len(self.dropped_examples)
        self.dropped_examples += other.dropped_examples[:max(0, room)]
        self.conversations |= other.conversations
        self.bad_conversations += other.bad_conversations

    def drop_conversations(self, bad: list[BadConversation]) -> None:
        """Count conversations the loader left out for bad input (and list them)."""
        self.bad_conversations += bad
        for b in bad:
            if len(self.dropped_examples) < self.max_kept_drops:
                self.dropped_examples.append(DroppedExample(
                    f"conversation {b.conversation}", b.db_id, b.reason, b.message()))

    @property
    def multi_turn(self) -> bool:
        return bool(self.conversations or self.bad_conversations)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat numbers for ``metrics/prepare.json``, every key prefixed with the split."""
        def mean(total: int) -> float:
            return round(total / self.n, 2) if self.n else 0.0

        out: dict[str, float] = {
            "n": self.n,
            "read": self.read,
            "dropped": sum(self.dropped.values()),
            **{f"dropped_{r}": self.dropped.get(r, 0) for r in DROP_REASONS},
            "table_recall": round(self.gold_tables_found / self.gold_tables, 4)
            if self.gold_tables else 1.0,
            "gold_unparsed": self.gold_unparsed,
            "full_schema_rate": round(self.full_schema / self.n, 4) if self.n else 0.0,
            "tables_shown_mean": mean(self.tables_shown),
            "prompt_tokens_mean": mean(self.prompt_tokens_sum),
            "prompt_tokens_max": self.prompt_tokens_max,
            "full_prompt_tokens_mean": mean(self.full_prompt_tokens_sum),
            "full_prompt_tokens_max": self.full_prompt_tokens_max,
            "schema_tokens_mean": mean(self.schema_tokens_sum),
            "full_schema_tokens_mean": mean(self.full_schema_tokens_sum),
            "schema_token_reduction": round(1 - self.schema_tokens_sum / self.full_schema_tokens_sum,
                                            4) if self.full_schema_tokens_sum else 0.0,
        }
        if self.multi_turn:
            bad = self.bad_conversations
            out.update({
                "conversations": len(self.conversations),
                "follow_ups": self.follow_ups,
                "history_turns_mean": round(self.history_turns_sum / self.follow_ups, 2)
                if self.follow_ups else 0.0,
                "history_turns_cut": self.history_turns_cut,
                "dropped_conversations": len(bad),
                "dropped_conversation_turns": sum(b.turns for b in bad),
            })
        return {f"{prefix}_{k}": v for k, v in out.items()}


class _Connections:
    """One read-only connection per database file, reused across examples."""

    def __init__(self) -> None:
        self._open: dict[str, sqlite3.Connection] = {}

    def get(self, path: str) -> sqlite3.Connection:
        if path not in self._open:
            if len(self._open) >= 16:
                self.close()
            self._open[path] = open_readonly(path)
        return self._open[path]

    def close(self) -> None:
        for c in self._open.values():
            c.close()
        self._open.clear()


def prepare_examples(
    examples: Iterable[Example],
    schemas: Mapping[str, Schema],
    *,
    schema_format: str = "ddl",
    link_schema: bool = True,
    full_schema_max_tables: int = 0,
    link_values: bool = True,
    value_hints: int = 5,
    sample_rows: int = 0,
    fk_parents: str = "single",
    check_gold: bool = True,
    stats: PrepareStats | None = None,
    options: PromptOptions | None = None,
    workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Yield one prompt/completion record per example, linking each to its tables.

    ``options`` (when given) replaces the prompt keywords; its ``answer`` says what the
    completion holds (the SQL, or the example's chain of thought and then the SQL). With
    ``check_gold``, an example whose gold SQL does not run on its database is dropped and
    counted in ``stats`` with SQLite's message, not raised. ``workers`` > 1 (0: one per
    core) prepares chunks of examples in that many processes: the same records in the same
    order, and the same ``stats``.
    """
    if options is None:
        options = PromptOptions(schema_format, link_schema, full_schema_max_tables, link_values,
                                value_hints, sample_rows, fk_parents)
    stats = stats if stats is not None else PrepareStats()
    if workers == 0:
        from text2sql.sql.workerpool import default_workers

        workers = default_workers()
    if workers > 1:
        yield from _prepare_in_pool(examples, schemas, options, check_gold, stats, workers)
        return
    preparer = _Preparer(schemas, options, check_gold)
    try:
        for ex in examples:
            row = preparer.prepare(ex, stats)
            if row is not None:
                yield row
    finally:
        preparer.close()


class _Preparer:
    """Prepares one example at a time, keeping what examples of a database share (its open
    connection, its full schema's token count)."""

    def __init__(self, schemas: Mapping[str, Schema], options: PromptOptions, check_gold: bool):
        self.schemas, self.options, self.check_gold = schemas, options, check_gold
        self.full_schema_tokens: dict[str, int] = {}
        self.conns = _Connections()

    def close(self) -> None:
        self.conns.close()

    def prepare(self, ex: Example, stats: PrepareStats) -> dict[str, Any] | None:
        """The record of ``ex``, or ``None`` when it is dropped (and counted in ``stats``)."""
        options = self.options
        stats.read += 1
        if not ex.question.strip():
            stats.drop(ex, "empty_question")
            return None
        if not ex.query.strip():
            stats.drop(ex, "empty_query")
            return None
        if options.answer == "reasoning" and ex.reasoning is None:
            raise DataError(f"example {ex.id} ({ex.db_id}): prepare.answer is reasoning, but it "
                            "has no chain of thought; set prepare.answer: sql")
        if self.check_gold and ex.db_path:
            error = run_error(self.conns.get(ex.db_path), ex.query)
            if error is not None:
                stats.drop(ex, "gold_sql_error", error)
                return None
        schema = self.schemas[ex.db_id]
        linked = make_prompt(ex.question, schema, ex.db_path, ex.evidence, options, ex.history)
        prompt_tokens = sum(count_tokens(m["content"]) for m in linked.messages)
        schema_tokens = count_tokens(linked.schema_text)
        if ex.db_id not in self.full_schema_tokens:
            self.full_schema_tokens[ex.db_id] = count_tokens(_full_schema_text(schema, ex,
                                                                               options))
        full_schema_tokens = self.full_schema_tokens[ex.db_id]
        # Token counts add up over the prompt's parts, so the full-schema prompt's
        # length is the linked one's with the schema part swapped.
        full_prompt_tokens = prompt_tokens - schema_tokens + full_schema_tokens
        stats.n += 1
        stats.full_schema += linked.full_schema
        stats.tables_shown += len(linked.tables)
        stats.prompt_tokens_sum += prompt_tokens
        stats.prompt_tokens_max = max(stats.prompt_tokens_max, prompt_tokens)
        stats.full_prompt_tokens_sum += full_prompt_tokens
        stats.full_prompt_tokens_max = max(stats.full_prompt_tokens_max, full_prompt_tokens)
        stats.schema_tokens_sum += schema_tokens
        stats.full_schema_tokens_sum += full_schema_tokens
        gold = referenced_tables(ex.query)
        if gold is None:
            stats.gold_unparsed += 1
        else:
            shown = {t.lower() for t in linked.tables}
            stats.gold_tables += len(gold)
            stats.gold_tables_found += len(gold & shown)
        answer = ex.query if options.answer == "sql" else reasoning_answer(ex.reasoning, ex.query)
        row: dict[str, Any] = {
            "id": ex.id,
            "db_id": ex.db_id,
            "db_path": ex.db_path,
            "question": ex.question,
            "query": ex.query,
            "tables": linked.tables,
            "prompt": linked.messages,
            "completion": [{"role": "assistant", "content": answer}],
        }
        if ex.evidence:
            row["evidence"] = ex.evidence
        if ex.bird_sha256:  # a BIRD split: evaluate scores it as BIRD's evaluator does
            row["bird_sha256"] = ex.bird_sha256
            if ex.bird_difficulty:
                row["bird_difficulty"] = ex.bird_difficulty
        if ex.turn is not None:
            shown_from = len(ex.history) - linked.history_turns
            # The turns behind the prompt's assistant messages, for infer.history=predicted.
            row.update(conversation=ex.conversation, turn=ex.turn, history=[
                {"turn": shown_from + i, "question": t.question, "query": t.query}
                for i, t in enumerate(ex.history[shown_from:])])
            stats.conversations.add(ex.conversation)
            stats.follow_ups += ex.turn > 0
            stats.history_turns_sum += linked.history_turns
            stats.history_turns_cut += len(ex.history) - linked.history_turns
        return row


# ------------------------------------------------------------- in processes

CHUNK_SIZE = 256  # examples sent to a worker at once
_worker_preparer: _Preparer | None = None  # in a worker process: its preparer


def _start_worker(schemas: Mapping[str, Schema], options: PromptOptions, check_gold: bool) -> None:
    global _worker_preparer
    _worker_preparer = _Preparer(schemas, options, check_gold)


def _prepare_chunk(chunk: list[Example]) -> tuple[list[dict[str, Any]], PrepareStats]:
    assert _worker_preparer is not None, "a worker prepares only after _start_worker"
    stats = PrepareStats()
    rows = [row for ex in chunk if (row := _worker_preparer.prepare(ex, stats)) is not None]
    return rows, stats


def _prepare_in_pool(examples: Iterable[Example], schemas: Mapping[str, Schema],
                     options: PromptOptions, check_gold: bool, stats: PrepareStats,
                     workers: int) -> Iterator[dict[str, Any]]:
    """``prepare_examples`` in ``workers`` processes (``multiprocessing.Pool``), in order.

    The examples are read here, in the parent (a reading error stops the run with its file
    and line), and at most ``2 x workers`` chunks are out at once, so memory stays bounded
    however long the input is (``Pool.imap`` would read the whole input ahead). Each chunk's
    counts are added to ``stats`` in input order, so they equal a one-process run's.
    """
    from text2sql.sql.workerpool import pool_context

    window = 2 * workers
    pending: deque = deque()

    def collect() -> Iterator[dict[str, Any]]:
        rows, chunk_stats = pending.popleft().get()
        stats.merge(chunk_stats)
        yield from rows

    with pool_context().Pool(workers, _start_worker, (schemas, options, check_gold)) as pool:
        it = iter(examples)
        while chunk := list(islice(it, CHUNK_SIZE)):
            pending.append(pool.apply_async(_prepare_chunk, (chunk,)))
            if len(pending) >= window:
                yield from collect()
        while pending:
            yield from collect()


def _full_schema_text(schema: Schema, ex: Example, options: PromptOptions) -> str:
    from text2sql.data.values import sample_rows

    rows = None
    if ex.db_path and options.sample_rows > 0:
        rows = {t: sample_rows(ex.db_path, t, options.sample_rows) for t in schema.table_names}
    return _schema_text(schema, schema.table_names, options.schema_format, rows,
                        schema_examples(ex.db_path, schema, schema.table_names,
                                        options.schema_format))


def prompt_options(params: Any) -> PromptOptions:
    """The prompt-shaping part of the ``prepare:`` params (a ``PrepareParams``)."""
    return PromptOptions(
        schema_format=params.schema_format,
        link_schema=params.link_schema,
        full_schema_max_tables=params.full_schema_max_tables,
        link_values=params.link_values,
        value_hints=params.value_hints,
        value_retrieval=params.value_retrieval,
        sample_rows=params.sample_rows,
        fk_parents=params.fk_parents,
        max_history_turns=params.max_history_turns,
        max_history_tokens=params.max_history_tokens,
        answer=params.answer,
    )


def load_splits(params: Any, root: str | None = None) -> tuple[Any, Any]:
    """Train and evaluation datasets as the ``prepare:`` params describe them.

    ``root`` (a folder) is prepended to relative paths, for callers outside the
    repository root (tests).
    """
    from pathlib import Path

    from text2sql.data.sources import load_dataset_splits

    def resolve(p: str | None) -> str | None:
        if p is None or root is None or Path(p).is_absolute():
            return p
        local = Path(root) / p
        # A Hugging Face id ("org/name") is not a path: leave it alone unless it exists here.
        return str(local) if params.source != "hf" or local.exists() else p

    c = params.columns
    return load_dataset_splits(
        params.source, resolve(params.path), params.train_split, params.eval_split,
        params.eval_fraction, params.seed, tables=resolve(params.tables),
        db_dir=resolve(params.db_dir), hf_config=params.hf_config,
        columns=c,
        hub=params.hub, revision=params.revision, reasoning=params.answer == "reasoning",
    )


def prepare_in_memory(params: Any, root: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Both splits prepared as the stage prepares them (same params, limits and linking),
    in memory and without writing anything: for tests and benchmarks."""
    train, evals = load_splits(params, root=root)
    kw = dict(options=prompt_options(params), check_gold=params.check_gold,
              workers=params.workers)
    return {
        "train": list(prepare_examples(islice(train.examples, params.max_train_examples),
                                       train.schemas, **kw)),
        "eval": list(prepare_examples(islice(evals.examples, params.max_eval_examples),
                                      evals.schemas, **kw)),
    }
