"""Execution-guided self-consistency: sample several queries, run them, vote by result.

For one question the model proposes N candidate queries. Each runs read-only on
the question's database with a time limit and a row cap (:mod:`text2sql.sql.sqlite`);
candidates that fail (parse error, unknown column, timeout, a write statement) are
dropped. The others are grouped by result set, with the evaluation's notion of
equal results (:func:`text2sql.evaluation.compare.results_match`: a bag of rows, columns in
any order, ``1`` equal to ``1.0``), and the largest group wins. An empty result
counts only when no candidate returns rows (``prefer_nonempty``, on by default): a
query with a wrong filter value returns nothing, and several wrong queries agree
on nothing far more often than right ones do. Ties between groups
go to the group holding the most likely candidate (highest sequence
log-probability), and the winning group is represented by its most likely
candidate. When every candidate fails, the most likely one is returned as it is.

:func:`choose_all` votes in worker processes (the evaluator's runner, with its
address-space limit), so a candidate that exhausts memory or hangs costs its question
a vote, never the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from text2sql.evaluation.compare import results_match
from text2sql.sql.parse import MAX_BARE_JOINS, too_hard_to_parse
from text2sql.sql.sqlite import (
    MAX_RESULT_BYTES,
    PARSE_ERROR,
    ExecResult,
    cached_connection,
    execute,
    failed_result,
    hard_timeout,
)
from text2sql.sql.workerpool import TaskFailed, heartbeat, run_tasks


@dataclass
class Candidate:
    raw: str  # what the model wrote
    sql: str  # what extraction made of it
    logprob: float  # sequence log-probability under the model


@dataclass
class Vote:
    chosen: int  # index into the candidates
    votes: int  # candidates in the winning group (0 when every candidate failed)
    valid: int  # candidates that executed
    groups: int  # distinct result sets among those that voted
    errors: list[str | None] = field(default_factory=list)  # per candidate: error kind or None


def vote(candidates: Sequence[Candidate], results: Sequence[ExecResult], *,
         prefer_nonempty: bool = True) -> Vote:
    """The candidate chosen by majority of result sets (see the module docstring)."""
    if not candidates:
        raise ValueError("self-consistency needs at least one candidate")
    if len(candidates) != len(results):
        raise ValueError(f"{len(candidates)} candidates but {len(results)} results")
    errors = [r.error for r in results]
    ran = [i for i, r in enumerate(results) if r.ok]
    voters = ran
    if prefer_nonempty and any(results[i].rows for i in ran):
        voters = [i for i in ran if results[i].rows]
    groups: list[list[int]] = []
    for i in voters:
        for group in groups:
            if results_match(results[group[0]].rows or [], results[i].rows or []):
                group.append(i)
                break
        else:
            groups.append([i])
    best_of = lambda members: max(members, key=lambda i: candidates[i].logprob)  # noqa: E731
    if not groups:
        return Vote(best_of(range(len(candidates))), 0, 0, 0, errors)
    winner = max(groups, key=lambda g: (len(g), candidates[best_of(g)].logprob))
    return Vote(best_of(winner), len(winner), len(ran), len(groups), errors)


def choose(conn: sqlite3.Connection, candidates: Sequence[Candidate], *, timeout_s: float,
           max_rows: int, prefer_nonempty: bool = True, max_bytes: int = MAX_RESULT_BYTES,
           known: Mapping[str, ExecResult] | None = None) -> Vote:
    """Execute every distinct candidate query on ``conn`` (read-only) and vote, here.

    ``known``: results already known by SQL (a candidate that killed a worker before).
    """
    cache: dict[str, ExecResult] = dict(known or {})
    results = []
    for c in candidates:
        if c.sql in cache:
            pass
        elif too_hard_to_parse(c.sql):  # would hang the SQL parser: see text2sql.sql.parse.MAX_BARE_JOINS
            cache[c.sql] = ExecResult(None, PARSE_ERROR,
                                      f"more than {MAX_BARE_JOINS} JOINs in a row without ON")
        else:
            heartbeat(c.sql)  # in a worker: the time limit holds per candidate
            cache[c.sql] = execute(conn, c.sql, timeout_s=timeout_s, max_rows=max_rows,
                                   max_bytes=max_bytes)
        results.append(cache[c.sql])
    return vote(candidates, results, prefer_nonempty=prefer_nonempty)


def choose_live(database: Any, candidates: Sequence[Candidate], *, timeout_s: float,
                max_rows: int, prefer_nonempty: bool = True,
                max_bytes: int = MAX_RESULT_BYTES) -> Vote:
    """:func:`choose` on a database behind a server (:class:`text2sql.ask.postgres.PostgresDatabase`):
    each distinct candidate runs there through ``database.run``, under its guards."""
    results = {c.sql: database.run(c.sql, timeout_s=timeout_s, max_rows=max_rows,
                                   max_bytes=max_bytes) for c in candidates}
    return vote(candidates, [results[c.sql] for c in candidates], prefer_nonempty=prefer_nonempty)


def _choose_task(task: tuple[str, list[Candidate], float, int, int, bool, dict[str, ExecResult]]
                 ) -> Vote:
    db_path, candidates, timeout_s, max_rows, max_bytes, prefer_nonempty, known = task
    return choose(cached_connection(db_path), candidates, timeout_s=timeout_s, max_rows=max_rows,
                  prefer_nonempty=prefer_nonempty, max_bytes=max_bytes, known=known)


def choose_all(questions: Sequence[tuple[str, Sequence[Candidate]]], *, timeout_s: float,
               max_rows: int, prefer_nonempty: bool = True, max_bytes: int = MAX_RESULT_BYTES,
               workers: int = 0, on_result: Callable[[int, Any], None] | None = None
               ) -> list[Vote]:
    """A :class:`Vote` for each ``(db_path, candidates)``, chosen in worker processes.

    Each candidate has ``timeout_s`` (plus the runner's margin). A candidate that
    kills or hangs its worker is marked failed and the question is voted again
    without running it, so one bomb costs one vote, never the question.
    """
    known: list[dict[str, ExecResult]] = [{} for _ in questions]
    votes: list[Vote | None] = [None] * len(questions)
    pending = list(range(len(questions)))
    while pending:
        tasks = [(str(questions[i][0]), list(questions[i][1]), timeout_s, max_rows, max_bytes,
                  prefer_nonempty, known[i]) for i in pending]
        answers = run_tasks(_choose_task, tasks, workers=workers,
                            hard_timeout_s=hard_timeout(timeout_s),
                            on_result=lambda k, v, ids=pending: (
                                None if on_result is None or isinstance(v, TaskFailed)
                                else on_result(ids[k], v)))
        retry = []
        for i, answer in zip(pending, answers, strict=True):
            candidates = questions[i][1]
            if not isinstance(answer, TaskFailed):
                votes[i] = answer
            elif answer.step is not None and answer.step not in known[i]:
                known[i][answer.step] = failed_result(answer)
                retry.append(i)
            else:  # failed outside any candidate: nothing left to learn by retrying
                failed = failed_result(answer)
                votes[i] = vote(candidates, [failed] * len(candidates))
                if on_result is not None:
                    on_result(i, votes[i])
        pending = retry
    return [v for v in votes if v is not None]
