"""Self-correction: a candidate whose SQL fails, or returns no rows, is asked again.

The follow-up is one more user turn after the model's answer, carrying the database's error
message (or saying the result was empty), so the conversation stays in the ChatML shape the
model was trained on. :func:`revise` runs up to N rounds over many candidates at once: each
round runs the open ones, then asks all that need it in one batched ``generate`` call. A
candidate stops when its SQL returns rows, when the model repeats the SQL it was told about,
or after N rounds. A last answer that fails to run never replaces one that ran: it is set
aside (``discarded``) and the latest earlier answer that ran, with no rows, stands (a query
that fails scores nothing, an empty result may be the right one). Used by ``infer``
(:mod:`text2sql.inference.predict`) and by the answer pipeline of ``ask``, ``chat``,
``serve`` and ``mcp`` (:mod:`text2sql.ask.pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from text2sql.sql.extract import extract_sql
from text2sql.sql.sqlite import EMPTY, ExecResult, shorten

NO_ROWS = "no_rows"  # the outcome of an earlier answer that ran and returned nothing
MAX_MESSAGE_CHARS = 500  # of a database error shown in the follow-up turn


@dataclass(frozen=True)
class Failure:
    """An earlier answer and why it was asked again."""

    sql: str
    outcome: str  # an error kind (text2sql.sql.sqlite), or NO_ROWS
    message: str  # the database's error message ("" for NO_ROWS)
    raw: str = field(default="", compare=False, repr=False)  # the model's text
    result: ExecResult | None = field(default=None, compare=False, repr=False)

    def as_record(self) -> dict[str, str]:
        return {"sql": self.sql, "outcome": self.outcome, "message": self.message}


@dataclass
class Attempt:
    """One candidate as it is revised: the conversation that wrote it, what it wrote, how
    its SQL ran, and the answers it replaced."""

    question: int  # which question it answers (an index the caller's ``run`` understands)
    messages: list[dict[str, str]]
    raw: str
    sql: str
    logprob: float = 0.0  # of the first answer: a revised one keeps it (its rank in a vote)
    result: ExecResult | None = None
    earlier: list[Failure] = field(default_factory=list)
    # the last answer, when it failed to run after an earlier one ran: that one stands
    discarded: Failure | None = None

    @property
    def rounds(self) -> int:
        """Follow-up turns this candidate took."""
        return len(self.earlier)


@dataclass
class RevisionTally:
    """Per round: candidates asked again, and of those how many then ran (without an
    error) and how many returned rows."""

    asked: list[int] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    with_rows: list[int] = field(default_factory=list)

    def add(self, other: RevisionTally) -> None:
        for mine, theirs in ((self.asked, other.asked), (self.ran, other.ran),
                             (self.with_rows, other.with_rows)):
            mine.extend([0] * (len(theirs) - len(mine)))
            for k, n in enumerate(theirs):
                mine[k] += n


def attempts_of(question: int, prompt: Sequence[dict[str, str]], texts: Sequence[str],
                logprobs: Sequence[float] = ()) -> list[Attempt]:
    """An :class:`Attempt` for each text the model wrote for ``prompt``, with its SQL."""
    scores = list(logprobs) or [0.0] * len(texts)
    return [Attempt(question, list(prompt), text, extract_sql(text), lp)
            for text, lp in zip(texts, scores, strict=True)]


def needs_revision(result: ExecResult) -> bool:
    """Whether an answer is asked again: it failed (to parse, to run) or returned no rows."""
    return not result.ok or not result.rows


def follow_up(result: ExecResult) -> str:
    """The user turn that asks again, with the database's own error message."""
    if result.error == EMPTY:
        return "There is no SQL query in your answer. Answer with a single SQL query."
    if not result.ok:
        message = shorten(result.message or result.error or "", MAX_MESSAGE_CHARS)
        return (f"The query failed with this error: {message}\n"
                "Answer with a corrected SQL query.")
    return ("The query ran but returned no rows. Answer with a corrected SQL query "
            "(the same one if no rows is the right answer).")


def revision_messages(attempt: Attempt) -> list[dict[str, str]]:
    """The conversation so far, the answer (its SQL, as training shows answers) and the
    follow-up turn about how it ran."""
    assert attempt.result is not None, "an attempt is run before it is revised"
    return [*attempt.messages,
            {"role": "assistant", "content": attempt.sql or attempt.raw.strip()},
            {"role": "user", "content": follow_up(attempt.result)}]


def revise(attempts: Sequence[Attempt], *, rounds: int,
           run: Callable[[Sequence[Attempt]], Sequence[ExecResult]],
           generate: Callable[[list[list[dict[str, str]]]], Sequence[str]]) -> RevisionTally:
    """Run each attempt, then up to ``rounds`` times ask again those that need it.

    ``run(attempts)``: each attempt's SQL run read-only and bounded, in order;
    ``generate(prompts)``: one text per conversation, in one batch. Attempts are updated in
    place (their answer, its result, the answers it replaced); an attempt whose last answer
    failed after an earlier one ran keeps that earlier one (:func:`keep_what_ran`).
    """
    _run_open(attempts, run)
    tally = RevisionTally()
    live = list(attempts)
    for _ in range(rounds):
        todo = [a for a in live if a.result is not None and needs_revision(a.result)]
        if not todo:
            break
        prompts = [revision_messages(a) for a in todo]
        texts = generate(prompts)
        if len(texts) != len(todo):
            raise ValueError(f"asked {len(todo)} follow-ups, got {len(texts)} answers")
        live = []
        for attempt, prompt, text in zip(todo, prompts, texts, strict=True):
            result = attempt.result
            assert result is not None
            attempt.earlier.append(Failure(attempt.sql, result.error or NO_ROWS,
                                           result.message if result.error else "",
                                           raw=attempt.raw, result=result))
            sql = extract_sql(text)
            attempt.messages, attempt.raw = prompt, text
            if sql != attempt.sql:  # the same SQL would run the same way: it stands
                attempt.sql, attempt.result = sql, None
                live.append(attempt)
        _run_open(live, run)
        tally.asked.append(len(todo))
        tally.ran.append(sum(bool(a.result and a.result.ok) for a in todo))
        tally.with_rows.append(sum(bool(a.result and a.result.ok and a.result.rows)
                                   for a in todo))
    for attempt in attempts:
        keep_what_ran(attempt)
    return tally


def keep_what_ran(attempt: Attempt) -> None:
    """If ``attempt``'s answer failed to run and an earlier one ran (with no rows: else it
    would not have been asked again), go back to the latest such one, with the conversation
    that wrote it, and set the failing answer aside as ``discarded``."""
    result = attempt.result
    if result is None or result.ok:
        return
    ran = [k for k, f in enumerate(attempt.earlier) if f.outcome == NO_ROWS]
    if not ran:
        return
    k = ran[-1]
    kept = attempt.earlier[k]
    assert kept.result is not None, "an earlier answer keeps its result"
    attempt.discarded = Failure(attempt.sql, result.error or "", result.message or "",
                                raw=attempt.raw, result=result)
    # each round added the answer and the follow-up: answer k was written 2(R - k) turns ago
    cut = len(attempt.messages) - 2 * (len(attempt.earlier) - k)
    attempt.messages = attempt.messages[:cut]
    attempt.sql, attempt.raw, attempt.result = kept.sql, kept.raw, kept.result


def _run_open(attempts: Sequence[Attempt], run: Callable[[Sequence[Attempt]],
                                                          Sequence[ExecResult]]) -> None:
    open_ = [a for a in attempts if a.result is None]
    if not open_:
        return
    results = run(open_)
    if len(results) != len(open_):
        raise ValueError(f"ran {len(open_)} queries, got {len(results)} results")
    for attempt, result in zip(open_, results, strict=True):
        attempt.result = result


def revision_metrics(attempts: Sequence[Attempt], tally: RevisionTally, rounds: int
                     ) -> dict[str, Any]:
    """What ``metrics/infer.json`` records of the revision: candidates asked again, how many
    of them ran in the end and returned rows, how many went back to an earlier answer that
    ran (their last one failed), and per round how many were asked and how many then ran."""
    revised = [a for a in attempts if a.rounds]
    metrics: dict[str, Any] = {
        "revise_rounds": rounds,
        "revised": len(revised),
        "revised_ran": sum(bool(a.result and a.result.ok) for a in revised),
        "revised_with_rows": sum(bool(a.result and a.result.ok and a.result.rows)
                                 for a in revised),
        "revised_kept_earlier": sum(a.discarded is not None for a in revised),
    }
    for k in range(rounds):
        metrics[f"revised_round_{k + 1}"] = tally.asked[k] if k < len(tally.asked) else 0
        metrics[f"ran_round_{k + 1}"] = tally.ran[k] if k < len(tally.ran) else 0
    return metrics
