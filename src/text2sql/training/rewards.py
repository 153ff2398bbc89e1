"""The execution reward of the ``align`` stage: run a candidate query, compare with the gold result.

One implementation, the evaluator's: every (database, gold, candidate) is scored by
:func:`text2sql.evaluation.scoring.score_items`, so a candidate runs read-only in a worker process
with the evaluator's time limit, row and byte caps and result comparison
(:mod:`text2sql.evaluation.compare`). A candidate that times out, fails, writes, floods memory or is
not SQL at all scores 0 and costs that candidate only, never the run.

Two rewards per candidate, both 0 or 1: ``execution_match`` (the result equals the gold
result, what execution accuracy counts) and ``valid_sql`` (it runs without an error); and
``graded``, Arctic-Text2SQL-R1's single reward (1 for the gold result, 0.1 for a query that
runs, 0 otherwise), which ``align.reward: arctic`` trains on.
Scores are cached for the run by (database, gold query, candidate SQL), so a candidate
sampled twice, or asked for by both reward functions, runs once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from text2sql.evaluation.scoring import CORRECT, GOLD_ERROR, EvalConfig, EvalItem, score_items
from text2sql.sql.extract import extract_sql

# Arctic-Text2SQL-R1 (Yao et al., 2025): a query that runs but answers wrong earns a tenth.
RUNS_REWARD = 0.1


@dataclass(frozen=True)
class Reward:
    """How one candidate did: its outcome (``correct``, ``wrong_result`` or an error kind)."""

    outcome: str
    valid_sql: bool

    @property
    def execution_match(self) -> float:
        return 1.0 if self.outcome == CORRECT else 0.0

    @property
    def valid(self) -> float:
        return 1.0 if self.valid_sql else 0.0

    @property
    def graded(self) -> float:
        """Arctic-Text2SQL-R1's reward: 1 for the gold result, 0.1 for a query that runs."""
        if self.outcome == CORRECT:
            return 1.0
        return RUNS_REWARD if self.valid_sql else 0.0


class ExecutionReward:
    """Scores candidate SQL against gold queries by executing both (see the module docstring).

    Example: ``ExecutionReward().score([(db_path, gold_sql, "SELECT ...")])[0].execution_match``
    is 1.0 when the candidate returns the gold result.
    """

    def __init__(self, *, timeout_s: float = 5.0, max_rows: int = 10000, workers: int = 0) -> None:
        self.config = EvalConfig(timeout_s=timeout_s, max_rows=max_rows, workers=workers,
                                 progress=False)
        self._cache: dict[tuple[str, str, str], Reward] = {}
        self.executed = 0  # candidates run so far (cache misses)

    def score(self, candidates: Sequence[tuple[str, str, str]]) -> list[Reward]:
        """A :class:`Reward` for each ``(db_path, gold_sql, candidate_sql)``, in order."""
        todo = list(dict.fromkeys(c for c in candidates if c not in self._cache))
        if todo:
            items = [EvalItem(str(k), "", db, "", gold, sql)
                     for k, (db, gold, sql) in enumerate(todo)]
            for key, scored in zip(todo, score_items(items, self.config), strict=True):
                self._cache[key] = Reward(scored.outcome, scored.valid_sql)
            self.executed += len(todo)
        return [self._cache[c] for c in candidates]

    def score_raw(self, db_paths: Sequence[str], golds: Sequence[str], raws: Sequence[str]
                  ) -> list[Reward]:
        """Like :meth:`score`, for the model's raw outputs (the SQL is extracted first, as
        the infer stage does)."""
        return self.score([(db, gold, extract_sql(raw))
                           for db, gold, raw in zip(db_paths, golds, raws, strict=True)])


def is_gold_error(reward: Reward) -> bool:
    """True when the gold query itself failed: the question cannot reward anything."""
    return reward.outcome == GOLD_ERROR
