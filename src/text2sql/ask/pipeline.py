"""The one road from a question (or given SQL) to an answer, shared by ``ask``, ``chat`` and
``serve``: prompt, generation, extraction, self-correction when asked (a failing or empty
query asked again with the database's error, :mod:`text2sql.inference.revision`), a vote when
there are several samples, the guards, and the read-only run on a
:class:`~text2sql.ask.database.Database`.

Generation is passed in as a callable, so each face keeps its own way of running the model
(a loaded generator, ``serve``'s batching queue) and a guard added here holds for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from text2sql.sql.sqlite import EMPTY, MAX_RESULT_BYTES, NOT_READ_ONLY, PARSE_ERROR, ExecResult

if TYPE_CHECKING:
    from text2sql.ask.database import Database
    from text2sql.data.prompts import HistoryTurn
    from text2sql.inference.revision import Attempt, Failure
    from text2sql.params import PrepareParams
    from text2sql.sql.schema import Schema


class Generation(Protocol):
    """What a generator returns for one prompt: the sampled texts and their log-probabilities
    (:class:`text2sql.inference.hf.Generation` and llama.cpp's both have them)."""

    texts: list[str]
    logprobs: list[float]


Generate = Callable[[list[list[dict[str, str]]], int], list[Generation]]
"""``generate(prompts, num_samples)``: the model's texts for each prompt (a list of chat
messages), generated together."""


@dataclass(frozen=True)
class Limits:
    """How long a query may run, how many rows and bytes of values it may return."""

    timeout_s: float = 5.0
    max_rows: int = 10000
    max_bytes: int = MAX_RESULT_BYTES


@dataclass(frozen=True)
class Tally:
    """How a self-consistency vote went."""

    samples: int  # candidates sampled
    votes: int  # candidates agreeing with the chosen one's result
    valid: int  # candidates that ran


@dataclass
class Answer:
    """Everything a face shows of one answer.

    ``guard`` names what refused the SQL: ``"bare_joins"`` (a model repeating itself, which
    would hang the parser) or ``"read_only"`` (not one SELECT/WITH query), both before
    anything ran, or ``"database"`` (the database's own guard stopped it: nothing changed).
    """

    sql: str
    source: str = "given"  # "given" or "model"
    tables: list[str] | None = None  # linked into the prompt (model answers only)
    vote: Tally | None = None
    translations: dict[str, str] = field(default_factory=dict)  # dialect -> SQL shown
    guard: str | None = None
    error_kind: str | None = None
    error: str | None = None
    result: ExecResult | None = None  # None: not run (refused first, or not asked to run)
    columns: list[str] = field(default_factory=list)
    generate_s: float | None = None
    execute_s: float | None = None
    revisions: list[Failure] = field(default_factory=list)  # the answers this one replaced
    discarded: Failure | None = None  # a last revision that failed: this earlier one ran

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def refused(self) -> bool:
        return self.guard is not None

    @property
    def executed(self) -> bool:
        """Whether the query ran on the database (and failed there, or gave rows)."""
        if self.result is None:
            return False
        return self.result.ok or self.result.error not in (EMPTY, PARSE_ERROR, NOT_READ_ONLY)

    @property
    def rows(self) -> list[tuple]:
        return (self.result.rows or []) if self.result is not None else []

    @property
    def truncated(self) -> bool:
        return self.result is not None and self.result.truncated


def translations(db: Database, sql: str, dialects: Sequence[str | None]) -> dict[str, str]:
    """``sql`` in each dialect: the database's own as it runs there, others by sqlglot."""
    from text2sql.sql.dialect import transpile

    return {d: db.shown(sql) if d == db.dialect else transpile(sql, d)
            for d in dict.fromkeys(dialects) if d}


def run_sql(db: Database, schema: Schema, sql: str, *, limits: Limits = Limits(),
            dialects: Sequence[str | None] = (), execute: bool = True,
            answer: Answer | None = None) -> Answer:
    """Guard ``sql``, translate it into ``dialects`` and (``execute``) run it read-only on
    ``db`` within ``limits``; filled into ``answer`` when given (a model's answer so far)."""
    from text2sql.sql.dialect import column_names
    from text2sql.sql.parse import MAX_BARE_JOINS, too_hard_to_parse
    from text2sql.sql.sqlite import check_read_only_query

    out = answer if answer is not None else Answer(sql)
    out.sql = sql
    if not sql.strip():
        out.guard, out.error_kind, out.error = "read_only", EMPTY, "no SQL"
        return out
    if too_hard_to_parse(sql):  # before sqlglot translates it: that would take hours
        out.guard, out.error_kind = "bare_joins", PARSE_ERROR
        out.error = (f"more than {MAX_BARE_JOINS} JOINs in a row without ON (a model repeating "
                     "itself)")
        return out
    out.translations = translations(db, sql, dialects)
    kind, message = check_read_only_query(sql)
    if kind is not None:
        out.guard, out.error_kind, out.error = "read_only", kind, message or None
        return out
    if not execute:
        return out
    t0 = time.perf_counter()
    result = out.result = db.run(sql, timeout_s=limits.timeout_s, max_rows=limits.max_rows,
                                 max_bytes=limits.max_bytes)
    out.execute_s = time.perf_counter() - t0
    if not result.ok:
        out.error_kind, out.error = result.error, result.message
        if result.error == NOT_READ_ONLY:
            out.guard = "database"
        return out
    rows = result.rows or []
    out.columns = list(result.columns or column_names(sql, schema, len(rows[0]) if rows else None))
    return out


def choose_sql(db: Database, candidates: Sequence[Attempt], *, limits: Limits = Limits(),
               prefer_nonempty: bool = True) -> tuple[int, Tally | None]:
    """Which candidate answers: the one, or (several samples) the one most others agree with
    by result on ``db``, and how the vote went."""
    from text2sql.inference.voting import Candidate

    if len(candidates) == 1:
        return 0, None
    chosen = db.vote([Candidate(c.raw, c.sql, c.logprob) for c in candidates],
                     timeout_s=limits.timeout_s, max_rows=limits.max_rows,
                     max_bytes=limits.max_bytes, prefer_nonempty=prefer_nonempty)
    return chosen.chosen, Tally(len(candidates), chosen.votes, chosen.valid)


def candidates_of(prompt: list[dict[str, str]], generation: Generation, db: Database,
                  generate: Generate | None = None, *, revise_rounds: int = 0,
                  limits: Limits = Limits()) -> list[Attempt]:
    """Each text of ``generation`` (the answers to ``prompt``) with its SQL; with
    ``revise_rounds``, those whose SQL fails or returns no rows on ``db`` asked again through
    ``generate``, all of a round together (:func:`text2sql.inference.revision.revise`)."""
    from text2sql.inference.revision import attempts_of, revise

    attempts = attempts_of(0, prompt, generation.texts, generation.logprobs)
    if revise_rounds:
        if generate is None:
            raise ValueError("revising needs the model: pass generate")

        def run(batch: Sequence[Attempt]) -> list[ExecResult]:
            return [db.run(a.sql, timeout_s=limits.timeout_s, max_rows=limits.max_rows,
                           max_bytes=limits.max_bytes) for a in batch]

        revise(attempts, rounds=revise_rounds, run=run,
               generate=lambda prompts: [g.texts[0] for g in generate(prompts, 1)])
    return attempts


def answer_generation(db: Database, schema: Schema, row: dict[str, Any], generation: Generation,
                      *, generate_s: float | None = None, limits: Limits = Limits(),
                      dialects: Sequence[str | None] = (), execute: bool = True,
                      prefer_nonempty: bool = True, revise_rounds: int = 0,
                      generate: Generate | None = None) -> Answer:
    """The answer to a prompted ``row`` (:func:`text2sql.ask.questions.prompt_row`) from the
    model's ``generation``: revised (``revise_rounds`` > 0 and ``execute``, through
    ``generate``), its SQL chosen, guarded and run."""
    rounds = revise_rounds if execute else 0  # revising runs the SQL: not when told not to
    candidates = candidates_of(row["prompt"] if rounds else [], generation, db, generate,
                               revise_rounds=rounds, limits=limits)
    chosen, tally = choose_sql(db, candidates, limits=limits, prefer_nonempty=prefer_nonempty)
    best = candidates[chosen]
    answer = Answer(best.sql, source="model", tables=list(row["tables"]), vote=tally,
                    generate_s=generate_s, revisions=list(best.earlier),
                    discarded=best.discarded)
    return run_sql(db, schema, best.sql, limits=limits, dialects=dialects, execute=execute,
                   answer=answer)


def answer_question(question: str, db: Database, schema: Schema, generate: Generate, *,
                    settings: PrepareParams, num_samples: int = 1, limits: Limits = Limits(),
                    dialects: Sequence[str | None] = (), execute: bool = True,
                    prefer_nonempty: bool = True, history: Sequence[HistoryTurn] = (),
                    revise_rounds: int = 0) -> Answer:
    """A question in plain words answered on ``db``: the prepare stage's prompt (with the
    conversation's ``history``), ``generate``'s ``num_samples`` texts, then
    :func:`answer_generation` (which asks again up to ``revise_rounds`` times)."""
    from text2sql.ask.questions import prompt_row

    row = prompt_row(question, db, schema, settings, history=history)
    t0 = time.perf_counter()
    [generation] = generate([row["prompt"]], num_samples)
    return answer_generation(db, schema, row, generation, generate_s=time.perf_counter() - t0,
                             limits=limits, dialects=dialects, execute=execute,
                             prefer_nonempty=prefer_nonempty, revise_rounds=revise_rounds,
                             generate=generate)
