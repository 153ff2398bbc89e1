"""Execution-guided self-consistency: sample several queries, run them, vote by result.

For one question the model proposes N candidate queries. Each runs read-only on
the question's database with a time limit and a row cap (:mod:`text2sql.execution`);
candidates that fail (parse error, unknown column, timeout, a write statement) are
dropped. The others are grouped by result set, with the evaluation's notion of
equal results (:func:`text2sql.compare.results_match`: a bag of rows, columns in
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from text2sql.compare import results_match
from text2sql.execution import (MAX_RESULT_BYTES, PARSE_ERROR, ExecResult, cached_connection,
                                execute, failed_result, hard_timeout)
from text2sql.sql import MAX_BARE_JOINS, too_hard_to_parse
from text2sql.workerpool import TaskFailed, run_tasks


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
           max_rows: int, prefer_nonempty: bool = True,
           max_bytes: int = MAX_RESULT_BYTES) -> Vote:
    """Execute every distinct candidate query on ``conn`` (read-only) and vote, here."""
    cache: dict[str, ExecResult] = {}
    results = []
    for c in candidates:
        if c.sql in cache:
            pass
        elif too_hard_to_parse(c.sql):  # would hang the SQL parser: see text2sql.sql.MAX_BARE_JOINS
            cache[c.sql] = ExecResult(None, PARSE_ERROR,
                                      f"more than {MAX_BARE_JOINS} JOINs in a row without ON")
        else:
            cache[c.sql] = execute(conn, c.sql, timeout_s=timeout_s, max_rows=max_rows,
                                   max_bytes=max_bytes)
        results.append(cache[c.sql])
    return vote(candidates, results, prefer_nonempty=prefer_nonempty)


def _choose_task(task: tuple[str, Sequence[Candidate], float, int, int, bool]) -> Vote:
    db_path, candidates, timeout_s, max_rows, max_bytes, prefer_nonempty = task
    return choose(cached_connection(db_path), candidates, timeout_s=timeout_s, max_rows=max_rows,
                  prefer_nonempty=prefer_nonempty, max_bytes=max_bytes)


def choose_all(questions: Sequence[tuple[str, Sequence[Candidate]]], *, timeout_s: float,
               max_rows: int, prefer_nonempty: bool = True, max_bytes: int = MAX_RESULT_BYTES,
               workers: int = 0, on_result: Callable[[int, Vote], None] | None = None
               ) -> list[Vote]:
    """A :class:`Vote` for each ``(db_path, candidates)``, chosen in worker processes.

    A question whose worker dies or hangs (past the deadline of all its distinct
    candidates) gets its most likely candidate, with every candidate marked failed.
    """
    tasks = [(str(db), list(cands), timeout_s, max_rows, max_bytes, prefer_nonempty)
             for db, cands in questions]
    most = max((len({c.sql for c in cands}) for _, cands in questions), default=1)
    answers = run_tasks(_choose_task, tasks, workers=workers,
                        hard_timeout_s=hard_timeout(timeout_s, most),
                        on_result=on_result)
    votes = []
    for (_, cands), answer in zip(questions, answers, strict=True):
        if isinstance(answer, TaskFailed):
            kind = failed_result(answer).error
            answer = vote(cands, [ExecResult(None, kind, answer.message)] * len(cands))
        votes.append(answer)
    return votes
