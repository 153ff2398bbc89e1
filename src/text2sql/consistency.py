"""Execution-guided self-consistency: sample several queries, run them, vote by result.

For one question the model proposes N candidate queries. Each runs read-only on
the question's database with a time limit and a row cap (:mod:`text2sql.execution`);
candidates that fail (parse error, unknown column, timeout, a write statement) are
dropped. The others are grouped by result set, with the evaluation's notion of
equal results (:func:`text2sql.compare.results_match`: a bag of rows, columns in
any order, ``1`` equal to ``1.0``), and the largest group wins. Ties between groups
go to the group holding the most likely candidate (highest sequence
log-probability), and the winning group is represented by its most likely
candidate. When every candidate fails, the most likely one is returned as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from text2sql.compare import results_match
from text2sql.execution import ExecResult, execute


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
    groups: int  # distinct result sets among them
    errors: list[str | None] = field(default_factory=list)  # per candidate: error kind or None


def vote(candidates: Sequence[Candidate], results: Sequence[ExecResult]) -> Vote:
    """The candidate chosen by majority of result sets (see the module docstring)."""
    if not candidates:
        raise ValueError("self-consistency needs at least one candidate")
    if len(candidates) != len(results):
        raise ValueError(f"{len(candidates)} candidates but {len(results)} results")
    errors = [r.error for r in results]
    groups: list[list[int]] = []
    for i, res in enumerate(results):
        if not res.ok:
            continue
        for group in groups:
            if results_match(results[group[0]].rows or [], res.rows or []):
                group.append(i)
                break
        else:
            groups.append([i])
    best_of = lambda members: max(members, key=lambda i: candidates[i].logprob)  # noqa: E731
    if not groups:
        return Vote(best_of(range(len(candidates))), 0, 0, 0, errors)
    winner = max(groups, key=lambda g: (len(g), candidates[best_of(g)].logprob))
    return Vote(best_of(winner), len(winner), sum(len(g) for g in groups), len(groups), errors)


def choose(conn: sqlite3.Connection, candidates: Sequence[Candidate], *, timeout_s: float,
           max_rows: int) -> Vote:
    """Execute every distinct candidate query on ``conn`` (read-only) and vote."""
    cache: dict[str, ExecResult] = {}
    results = []
    for c in candidates:
        if c.sql not in cache:
            cache[c.sql] = execute(conn, c.sql, timeout_s=timeout_s, max_rows=max_rows)
        results.append(cache[c.sql])
    return vote(candidates, results)
