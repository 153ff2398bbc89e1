"""Answering ``/v1/sql`` requests: :class:`Answerer` runs the shared answer pipeline
(:mod:`text2sql.ask.pipeline`) under the server's limits, and :func:`answer_body` turns an
answer into JSON.

SQL runs in a pool of ``sql_workers`` threads, each query under the runner's deadline, so a
runaway query holds one worker for at most ``timeout_s`` and never the event loop. With
``revise_rounds`` a failing answer is asked again from that thread: its follow-up goes to the
model's queue on the event loop, batched with whatever else waits there. Beyond
``max_pending`` requests in flight the server answers 429 instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from text2sql.ask.pipeline import Answer, Limits, answer_generation, run_sql
from text2sql.ask.questions import prepare_settings, prompt_row
from text2sql.serve.catalog import Catalog

if TYPE_CHECKING:
    from text2sql.inference.revision import Failure
    from text2sql.serve.batcher import BatchGenerator
    from text2sql.serve.schemas import SqlRequest
    from text2sql.serve.settings import ServeSettings


class Overloaded(RuntimeError):
    """More requests in flight than ``max_pending`` (answered 429)."""


class NoModel(RuntimeError):
    """A question for a server started without a model (answered 503)."""


class Answerer:
    """The catalog, the model's queue and the SQL pool of one server, and what is in flight."""

    def __init__(self, settings: ServeSettings, generator: BatchGenerator | None):
        self.settings, self.generator = settings, generator
        self.catalog = Catalog(settings.databases, pool_size=settings.sql_workers,
                               allow_writable_role=settings.allow_writable_role)
        self.prepare = prepare_settings(settings.params)
        self.sql_pool = ThreadPoolExecutor(max_workers=settings.sql_workers,
                                           thread_name_prefix="sql")
        self.in_flight = 0

    def close(self) -> None:
        self.sql_pool.shutdown(wait=False, cancel_futures=True)
        self.catalog.close()

    def check_capacity(self) -> None:
        """:class:`Overloaded` when ``max_pending`` requests are in flight."""
        if self.in_flight >= self.settings.max_pending:
            raise Overloaded(f"busy: {self.in_flight} requests in flight (--max-pending "
                             f"{self.settings.max_pending}); retry in a moment")

    def model(self) -> BatchGenerator:
        """The model's queue; :class:`NoModel` when this server was started without one."""
        if self.generator is None:
            raise NoModel("this server runs without a model (--no-model): send your own 'sql'")
        return self.generator

    @contextmanager
    def admitted(self) -> Iterator[None]:
        self.check_capacity()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def in_pool(self, work: Any, *args: Any) -> Any:
        """``work(*args)`` on a thread of the SQL pool."""
        return await asyncio.get_running_loop().run_in_executor(self.sql_pool, work, *args)

    async def answer(self, req: SqlRequest) -> dict[str, Any]:
        """The JSON answer to one request: the given SQL, or the model's for the question;
        ``usage`` counts the tokens of the rendered prompt and those generated (0 for SQL
        given by the client)."""
        t0 = time.perf_counter()
        settings = self.settings
        with self.admitted():
            db, schema = await self.in_pool(self.catalog.schema, req.db)
            limits = Limits(timeout_s=min(req.timeout_s or settings.timeout_s, settings.timeout_s),
                            max_rows=min(req.max_rows or settings.max_rows, settings.max_rows))
            dialect = req.dialect or db.dialect
            prompt_tokens = completion_tokens = 0
            if req.sql is not None:
                sql = req.sql
                answer = await self.in_pool(lambda: run_sql(
                    db, schema, sql, limits=limits, dialects=[dialect], execute=req.execute))
            else:
                generator = self.model()
                row = prompt_row(req.question or "", db, schema, self.prepare)
                n = req.num_samples or generator.infer.num_samples
                rounds = settings.revise_rounds if settings.revise_rounds is not None \
                    else generator.infer.revise_rounds
                loop = asyncio.get_running_loop()
                follow_up_tokens = [0, 0]  # prompt, completion: what revising asked and got

                def generate(prompts: list[list[dict[str, str]]], num_samples: int) -> Any:
                    # on a thread of the SQL pool: the model's queue lives on the event loop
                    gens = asyncio.run_coroutine_threadsafe(
                        generator.write_many(prompts, num_samples), loop).result()
                    follow_up_tokens[0] += sum(g.prompt_tokens for g in gens)
                    follow_up_tokens[1] += sum(g.new_tokens for g in gens)
                    return gens

                t1 = time.perf_counter()
                gen = await generator.write(row["prompt"], n)
                generate_s = time.perf_counter() - t1
                prompt_tokens, completion_tokens = gen.prompt_tokens, gen.new_tokens
                answer = await self.in_pool(lambda: answer_generation(
                    db, schema, row, gen, generate_s=generate_s, limits=limits,
                    dialects=[dialect], execute=req.execute,
                    prefer_nonempty=generator.infer.prefer_nonempty, revise_rounds=rounds,
                    generate=generate))
                prompt_tokens += follow_up_tokens[0]
                completion_tokens += follow_up_tokens[1]
        body = {"db": req.db, "question": req.question, **answer_body(answer, dialect)}
        body["timings"]["total_s"] = round(time.perf_counter() - t0, 4)
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
        return body


def answer_body(answer: Answer, dialect: str | None) -> dict[str, Any]:
    """An answer as JSON (``dialect_sql``: the SQL in ``dialect``; on PostgreSQL, unless
    another dialect is asked, the SQL that runs there)."""
    body: dict[str, Any] = {}
    if answer.tables is not None:
        body["tables"] = answer.tables
    body["source"] = answer.source
    if answer.vote is not None:
        body["vote"] = {"samples": answer.vote.samples, "votes": answer.vote.votes,
                        "valid": answer.vote.valid}
    error = answer.error
    if answer.guard == "bare_joins":
        error = f"{error}; nothing was executed"
    timings = {name: round(seconds, 4) for name, seconds in
               (("generate_s", answer.generate_s), ("execute_s", answer.execute_s))
               if seconds is not None}
    return {**body, "sql": answer.sql, "dialect": dialect,
            "dialect_sql": answer.translations.get(dialect) if dialect else None,
            "columns": answer.columns, "rows": [[jsonable(v) for v in row] for row in answer.rows],
            "truncated": answer.truncated, "error_kind": answer.error_kind, "error": error,
            "executed": answer.executed, "timings": timings,
            "revisions": [revision_body(r) for r in answer.revisions],
            "discarded": revision_body(answer.discarded) if answer.discarded else None}


def revision_body(failure: Failure) -> dict[str, Any]:
    """An earlier (or set-aside) answer as the body shows it: its SQL, outcome and error."""
    return {"sql": failure.sql, "outcome": failure.outcome, "error": failure.message or None}


def jsonable(value: Any) -> Any:
    """A result cell as JSON can carry it: BLOBs described, NaN and infinities as text;
    PostgreSQL's decimals as numbers, dates and times in ISO 8601, anything else as text."""
    from decimal import Decimal

    if isinstance(value, (bytes, memoryview)):
        return f"<BLOB, {len(value)} bytes>"
    if isinstance(value, Decimal):
        value = int(value) if value.is_finite() and value == value.to_integral_value() \
            else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
