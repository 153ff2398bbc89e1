"""BIRD's own metrics: EX as set equality, Soft-F1, R-VES, the difficulty table, the dev version.

Each follows bird-bench/mini_dev ``evaluation/`` (files and lines cited where the code follows
them; none of its code is copied), checked against it example by example in tests/test_bird.py:

- EX (:func:`bird_match`): ``set(predicted) == set(gold)``: row order and duplicate rows do not
  count, column order does; queries run as written (no DISTINCT removed).
- Soft-F1 (:func:`soft_f1`): rows deduplicated, paired by position, cells matched by membership.
- R-VES (:func:`ves_reward`, :func:`r_ves`): the mean gold/predicted time ratio over repeated
  timings, outliers past 3 standard deviations dropped, mapped to a reward bucket; the score is
  the mean square root of the rewards. A time ratio depends on the machine and its load: compare
  R-VES only between runs on the same machine.

docs/evaluation.md says how these compare with BIRD's leaderboard.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from text2sql.sql.sqlite import TIMEOUT, execute, open_readonly

BIRD_LEVELS = ("simple", "moderate", "challenging")
SEMANTICS = ("auto", "spider", "bird")

# sha256 of BIRD's dev question files -> release. Empty: the published files could not be
# hashed where this was written (no network), and a hash is never guessed. A file not listed
# is recorded as "unknown" with its sha256 (docs/evaluation.md says how to add one).
KNOWN_DEV_FILES: dict[str, str] = {}
UNKNOWN_VERSION = "unknown"


@dataclass(frozen=True)
class BirdConfig:
    """Scoring with BIRD's semantics; ``ves_repeats`` 0 leaves R-VES out (the default: timings
    vary by machine, and the metrics stay the same bytes from run to run without them)."""

    ves_repeats: int = 0  # timings per example (mini_dev evaluation_ves.py:112 uses 100)
    ves_timeout_s: float = 3.0  # per timing; budget of an example: ves_timeout_s * ves_repeats

    def __post_init__(self) -> None:
        if self.ves_repeats < 0 or self.ves_repeats == 1:
            raise ValueError(f"{self.ves_repeats} R-VES timings: use 0 (no R-VES) or at least 2 "
                             "(BIRD's outlier filter keeps no ratio of a single timing, so every "
                             "reward would be 0)")
        if self.ves_timeout_s <= 0:
            raise ValueError(f"R-VES timeout {self.ves_timeout_s:g} s: must be > 0")


def resolve_semantics(semantics: str, bird_layout: bool) -> str:
    """``spider`` or ``bird``: ``auto`` follows the dataset's layout."""
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics {semantics!r} is not one of {', '.join(SEMANTICS)}")
    if semantics == "auto":
        return "bird" if bird_layout else "spider"
    return semantics


def dev_version(sha256: str | None) -> str:
    """The BIRD release a question file's sha256 identifies, or ``unknown``."""
    return KNOWN_DEV_FILES.get(sha256 or "", UNKNOWN_VERSION)


def version_note(digests: Iterable[str]) -> str:
    """What the report records of the BIRD split files: each one's version and sha256."""
    return "".join(f" BIRD split file sha256 {d}: version {dev_version(d)}."
                   for d in sorted(set(digests)))


# --- per example ---------------------------------------------------------------------

def bird_match(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> bool:
    """BIRD's EX verdict: the same set of rows (evaluation_ex.py:18-22)."""
    return set(map(tuple, pred)) == set(map(tuple, gold))


def _row_match(pred_row: tuple, gold_row: tuple) -> tuple[float, float, float]:
    # (matched, predicted only, gold only) cells as fractions of the gold row's width,
    # membership tested with `in` as evaluation_f1.py:14-40 does (duplicates each count).
    width = len(gold_row)
    matched = sum(v in gold_row for v in pred_row)
    return (matched / width, (len(pred_row) - matched) / width,
            sum(v not in pred_row for v in gold_row) / width)


def soft_f1(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> float:
    """BIRD's Soft-F1 of one prediction (evaluation_f1.py:43-101).

    Both empty: 1.0. Otherwise duplicate rows are dropped (first occurrence kept), the i-th
    predicted row is compared with the i-th gold row, an unpaired row counts wholly against.
    """
    if not pred and not gold:
        return 1.0
    p = list(dict.fromkeys(map(tuple, pred)))
    g = list(dict.fromkeys(map(tuple, gold)))
    tp = fp = fn = 0.0
    for i, gold_row in enumerate(g):
        if i >= len(p):
            fn += 1
            continue
        m, po, go = _row_match(p[i], gold_row)
        tp, fp, fn = tp + m, fp + po, fn + go
    for _ in range(len(p) - len(g)):  # one at a time: the same float sums as the official
        fp += 1
    precision = tp / (tp + fp) if tp + fp > 0 else 0
    recall = tp / (tp + fn) if tp + fn > 0 else 0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _without_outliers(ratios: Sequence[float]) -> list[float]:
    # evaluation_ves.py:23-31: keep mean - 3 std < x < mean + 3 std (strictly; population std)
    n = len(ratios)
    mean = math.fsum(ratios) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in ratios) / n)
    return [x for x in ratios if mean - 3 * std < x < mean + 3 * std]


def reward_of_ratio(time_ratio: float) -> float:
    """The reward bucket of a mean time ratio (evaluation_ves.py:68-79)."""
    if time_ratio == 0:
        return 0.0
    if time_ratio >= 2:
        return 1.25
    if time_ratio >= 1:
        return 1.0
    if time_ratio >= 0.5:
        return 0.75
    if time_ratio >= 0.25:
        return 0.5
    return 0.25


def ves_reward(gold_seconds: Sequence[float], pred_seconds: Sequence[float]) -> float:
    """The reward of a correct prediction given paired timings (evaluation_ves.py:49-81).

    As there, a zero predicted time and a filter that keeps no ratio (all ratios equal, one
    timing among them) raise inside the official function, which scores them 0 (line 101).
    """
    if not gold_seconds or any(t <= 0 for t in pred_seconds):
        return 0.0
    kept = _without_outliers([g / p for g, p in zip(gold_seconds, pred_seconds)])
    return reward_of_ratio(sum(kept) / len(kept)) if kept else 0.0


def r_ves(rewards: Iterable[float]) -> float:
    """Mean square root of the rewards (evaluation_ves.py:136-146), on a 0-1.118 scale
    (BIRD prints it times 100)."""
    rewards = list(rewards)
    return math.fsum(math.sqrt(r) for r in rewards) / len(rewards) if rewards else 0.0


def time_pair(task: tuple[str, str, str, int, float, int]) -> tuple[float, str]:
    """In a worker: ``(reward, message)`` of a prediction BIRD scores correct, timed with its
    gold query ``repeats`` times in turn (evaluation_ves.py:57-65), read-only, under the limits
    of :func:`text2sql.sql.sqlite.execute`; over the budget or on an error, reward 0 (:99-103)."""
    db_path, pred, gold, repeats, timeout_s, max_rows = task
    budget = timeout_s * repeats
    over = f"R-VES: over the timing budget of {budget:g} s"
    deadline = time.monotonic() + budget
    pred_seconds: list[float] = []
    gold_seconds: list[float] = []
    for _ in range(repeats):
        for sql, seconds in ((pred, pred_seconds), (gold, gold_seconds)):
            left = deadline - time.monotonic()
            if left <= 0:
                return 0.0, over
            # A fresh connection each time, timed with the query and its fetch, as BIRD's
            # execute_sql times them (evaluation_ves.py:34-46).
            start = time.monotonic()
            conn = open_readonly(db_path)
            try:
                result = execute(conn, sql, timeout_s=left, max_rows=max_rows)
            finally:
                conn.close()
            if not result.ok:
                return 0.0, over if result.error == TIMEOUT else f"R-VES: {result.message}"
            seconds.append(time.monotonic() - start)
    return ves_reward(gold_seconds, pred_seconds), ""


# --- summaries -------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float:
    return round(math.fsum(values) / len(values), 4) if values else 0.0


def bird_metrics(scored: Sequence[Any]) -> dict[str, float]:
    """``soft_f1``, ``r_ves`` (when timed) and, per BIRD level L present, the difficulty table
    of evaluation_ex.py:69-106: ``execution_accuracy_L``, ``soft_f1_L``, ``r_ves_L``, ``n_L``.

    ``scored``: the scorable examples (objects with ``outcome``, ``soft_f1``, ``ves_reward``,
    ``bird_difficulty``)."""
    timed = any(r.ves_reward is not None for r in scored)
    metrics: dict[str, float] = {}

    def add(suffix: str, group: Sequence[Any]) -> None:
        if suffix:
            metrics[f"execution_accuracy{suffix}"] = _mean([r.outcome == "correct"
                                                            for r in group])
        metrics[f"soft_f1{suffix}"] = _mean([r.soft_f1 or 0.0 for r in group])
        if timed:
            metrics[f"r_ves{suffix}"] = round(r_ves(r.ves_reward or 0.0 for r in group), 4)
        if suffix:
            metrics[f"n{suffix}"] = len(group)

    add("", scored)
    for level in BIRD_LEVELS:
        group = [r for r in scored if r.bird_difficulty == level]
        if group:
            add(f"_{level}", group)
    return metrics


def report_lines(metrics: Mapping[str, float]) -> list[str]:
    """Markdown for the report: BIRD's table by difficulty (as its evaluator prints it)."""
    levels = [lv for lv in BIRD_LEVELS if f"n_{lv}" in metrics]
    if not levels:
        return []
    timed = "r_ves" in metrics
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731 (BIRD prints percentages, two decimals)
    head = "| BIRD difficulty | n | EX | Soft-F1 |" + (" R-VES |" if timed else "")
    lines = [head, "|---|---:|---:|---:|" + ("---:|" if timed else "")]
    for level, suffix in [(lv, f"_{lv}") for lv in levels] + [("total", "")]:
        n = metrics[f"n{suffix}"]
        row = (f"| {level} | {int(n)} | {pct(metrics[f'execution_accuracy{suffix}'])} "
               f"| {pct(metrics[f'soft_f1{suffix}'])} |")
        lines.append(row + (f" {pct(metrics[f'r_ves{suffix}'])} |" if timed else ""))
    return lines + [""]
