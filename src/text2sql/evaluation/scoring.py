"""Scoring predictions: execution accuracy, exact set match, normalized match, Spider
difficulty and error kinds.

Shared by the ``evaluate`` stage and the ``text2sql evaluate`` command:

1. every distinct (database, gold SQL) runs once, in worker processes, and is cached;
   a gold query that fails (or whose result exceeds ``max_rows``) makes its examples
   data errors (``gold_error``), counted apart and never scored against the model;
2. every prediction runs in worker processes and is compared with its cached gold
   result (:mod:`text2sql.evaluation.compare`); a query that crashes or hangs its worker costs
   that example only (:mod:`text2sql.sql.workerpool`);
3. :func:`summarize` turns the per-example outcomes into flat metrics, and
   :func:`render_report` into markdown for a pull request.

With ``EvalConfig.bird`` set, results compare as BIRD's evaluator compares them, Soft-F1 is
scored and R-VES timed (:mod:`text2sql.evaluation.bird`).

Outcome of an example: ``correct``, ``wrong_result``, one of the execution error
kinds of :mod:`text2sql.sql.sqlite`, or ``gold_error``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from text2sql.evaluation.bird import BirdConfig, bird_match, bird_metrics, soft_f1, time_pair
from text2sql.evaluation.bird import report_lines as bird_report_lines
from text2sql.evaluation.compare import (
    normalize_sql,
    order_matters,
    prepare_for_execution,
    results_match,
)
from text2sql.evaluation.difficulty import LEVELS, difficulty
from text2sql.evaluation.exact_set_match import (
    gold_structure,
    matches_gold,
    read_schema,
)
from text2sql.evaluation.significance import bootstrap_interval
from text2sql.io import without_runtime, write_json, write_jsonl, write_text
from text2sql.sql.parse import parse_sqlite
from text2sql.sql.sqlite import (
    ERROR_KINDS,
    EXEC_ERROR,
    TIMEOUT,
    ExecResult,
    cached_connection,
    execute,
    hard_timeout,
    shorten,
)
from text2sql.sql.workerpool import TaskFailed, run_tasks

CORRECT = "correct"
WRONG_RESULT = "wrong_result"
GOLD_ERROR = "gold_error"  # the dataset's own query fails: a data error, never scored
OUTCOMES = (CORRECT, WRONG_RESULT, *ERROR_KINDS)
UNKNOWN_LEVEL = "unknown"  # difficulty of a gold query sqlglot cannot parse
GOLD_TIMEOUT = "gold query: over the gold timeout: "  # message of a gold error that timed out


@dataclass(frozen=True)
class EvalItem:
    """One example to score: its gold query, its database and the predicted SQL."""

    id: str
    db_id: str
    db_path: str | None
    question: str
    gold: str
    pred: str
    bird_difficulty: str | None = None  # BIRD's own level (simple / moderate / challenging)


@dataclass(frozen=True)
class EvalConfig:
    timeout_s: float = 5.0
    max_rows: int = 100_000
    workers: int = 0  # 0: one per core
    keep_distinct: bool = False
    progress: bool = True
    bird: BirdConfig | None = None  # None: Spider's semantics
    gold_timeout_s: float | None = None  # None: timeout_s
    test_suite: bool = True  # score on every database of a test-suite folder (test_suite.py)
    plug_value: bool = False  # test-suite accuracy with the gold values plugged in


@dataclass
class Scored:
    id: str
    db_id: str
    question: str
    gold: str
    pred: str
    outcome: str  # correct | wrong_result | an execution error kind | gold_error
    normalized_match: bool
    valid_sql: bool
    exact_set_match: bool = False  # Spider's, as the official evaluator's --etype match
    message: str = ""
    difficulty: str = UNKNOWN_LEVEL
    gold_rows: int | None = None
    pred_rows: int | None = None
    seconds: float = 0.0
    bird_difficulty: str | None = None
    soft_f1: float | None = None  # BIRD semantics only
    ves_reward: float | None = None  # BIRD semantics with R-VES timed only
    test_suite: bool | None = None  # right on every database of the suite (None: not scored)
    test_suite_failed_on: str | None = None  # the first database of the suite it is wrong on
    # (with test_suite None: the one the gold query fails on)


@dataclass(frozen=True)
class GoldResult:
    result: ExecResult
    ordered: bool
    difficulty: str
    normalized: str | None  # for normalized match (None: unparsable; the gold text itself when
    # every prediction of this gold query is that same text, so no normal form is needed)
    structure: dict | None = None  # for exact set match (None: outside the official grammar)


# --- work done inside worker processes ------------------------------------------

def _as_run(sql: str, keep_distinct: bool | None) -> str:
    # None: BIRD's semantics, where queries run as written
    return sql if keep_distinct is None else prepare_for_execution(sql, keep_distinct)


def _run_gold(task: tuple[str, str, bool | None, float, int, bool]) -> GoldResult:
    db_path, gold_sql, keep_distinct, timeout_s, max_rows, normalize = task
    result = execute(cached_connection(db_path), _as_run(gold_sql, keep_distinct),
                     timeout_s=timeout_s, max_rows=max_rows)
    # The normal form serves normalized match with a prediction that is not the gold text itself;
    # a prediction that is matches exactly when the gold query parses at all.
    parses = parse_sqlite(gold_sql) is not None
    normalized = normalize_sql(gold_sql) if normalize else (gold_sql if parses else None)
    return GoldResult(result, order_matters(gold_sql), difficulty(gold_sql) or UNKNOWN_LEVEL,
                      normalized, gold_structure(gold_sql, read_schema(db_path)))


# Functions whose value changes from one run to the next: such a query is run again even
# when the prediction is the gold text itself.
_VOLATILE = re.compile(r"\b(random|randomblob|changes|total_changes|last_insert_rowid)\s*\(|"
                       r"'now'|\bcurrent_(date|time|timestamp)\b", re.IGNORECASE)


def runs_as_gold(item: EvalItem) -> bool:
    """True when the prediction is the gold query's own text (as it runs) and that query
    gives the same result every time: its result is the gold result, no need to run it."""
    pred, gold = item.pred.strip(), item.gold.strip()
    return pred == gold and not _VOLATILE.search(gold)


def _run_prediction(task: tuple[EvalItem, GoldResult, bool | None, float, int]
                    ) -> tuple[tuple[str, bool, bool, str, int | None, float, float | None], bool]:
    """``(outcome, normalized_match, valid_sql, message, pred_rows, seconds, soft_f1)`` and the
    exact set match of one prediction."""
    item, gold = task[:2]
    return _execute_prediction(task), matches_gold(item.pred, gold.structure,
                                                   read_schema(item.db_path))


def _execute_prediction(task: tuple[EvalItem, GoldResult, bool | None, float, int]
                        ) -> tuple[str, bool, bool, str, int | None, float, float | None]:
    item, gold, keep_distinct, timeout_s, max_rows = task
    no_f1 = 0.0 if keep_distinct is None else None
    gold_rows, ordered = gold.result.rows or [], gold.ordered
    if item.pred.strip() == item.gold.strip():
        em = gold.normalized is not None
    else:
        em = gold.normalized is not None and normalize_sql(item.pred) == gold.normalized
    pred = execute(cached_connection(item.db_path), _as_run(item.pred, keep_distinct),
                   timeout_s=timeout_s, max_rows=max_rows)
    if not pred.ok:
        return pred.error or EXEC_ERROR, em, False, pred.message, None, pred.seconds, no_f1
    rows = pred.rows or []
    if pred.truncated:  # the gold result has at most max_rows rows: they differ
        return (WRONG_RESULT, em, True, f"more than {max_rows} rows", len(rows), pred.seconds,
                no_f1)
    if keep_distinct is None:  # BIRD's semantics
        ok, f1 = bird_match(gold_rows, rows), soft_f1(gold_rows, rows)
    else:
        ok, f1 = results_match(gold_rows, rows, ordered), None
    return CORRECT if ok else WRONG_RESULT, em, True, "", len(rows), pred.seconds, f1


# --- the parent's side -----------------------------------------------------------

def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked after this
    # disable=None: shown on a terminal, silent in logs.
    return tqdm(total=total, desc=desc, unit="query", disable=None if enabled and total else True,
                dynamic_ncols=True, leave=False)


def unique_gold_queries(items: Iterable[EvalItem]) -> list[tuple[str, str]]:
    """The distinct (database, gold SQL) pairs, in first-seen order: each runs once."""
    return list(dict.fromkeys((item.db_path or "", item.gold) for item in items))


def score_items(items: Sequence[EvalItem], config: EvalConfig = EvalConfig()) -> list[Scored]:
    """Score every item (see the module docstring); results in the order of ``items``."""
    hard_timeout_s = hard_timeout(config.timeout_s)  # SQLite stops at timeout_s; this catches the rest
    gold_timeout_s = config.gold_timeout_s or config.timeout_s
    keep_distinct = None if config.bird is not None else config.keep_distinct  # None: as written
    missing: dict[int, str] = {}
    for k, item in enumerate(items):
        if not item.db_path:
            missing[k] = "no SQLite database for this example (the source has none)"
        elif not Path(item.db_path).is_file():
            missing[k] = f"{item.db_path}: SQLite file not found"
    unique = unique_gold_queries(item for k, item in enumerate(items) if k not in missing)
    gold_keys = {key: n for n, key in enumerate(unique)}
    differs = {(item.db_path or "", item.gold) for item in items
               if item.pred.strip() != item.gold.strip()}
    gold_tasks = [(db_path, gold, keep_distinct, gold_timeout_s, config.max_rows,
                   (db_path, gold) in differs) for db_path, gold in unique]
    with _progress(len(gold_tasks), "gold queries", config.progress) as bar:
        gold = run_tasks(_run_gold, gold_tasks, workers=config.workers,
                         hard_timeout_s=hard_timeout(gold_timeout_s),
                         on_result=lambda i, r: bar.update())

    scored: list[Scored | None] = [None] * len(items)
    pred_tasks, pred_index = [], []
    for k, item in enumerate(items):
        base = dict(id=item.id, db_id=item.db_id, question=item.question, gold=item.gold,
                    pred=item.pred, bird_difficulty=item.bird_difficulty)
        if k in missing:
            scored[k] = Scored(**base, outcome=GOLD_ERROR, normalized_match=False, valid_sql=False,
                               message=missing[k],
                               difficulty=difficulty(item.gold) or UNKNOWN_LEVEL)
            continue
        g = gold[gold_keys[(item.db_path, item.gold)]]
        if isinstance(g, TaskFailed):
            scored[k] = Scored(**base, outcome=GOLD_ERROR, normalized_match=False, valid_sql=False,
                               message=(GOLD_TIMEOUT if g.reason == "hung" else "gold query: ")
                               + g.message,
                               difficulty=difficulty(item.gold) or UNKNOWN_LEVEL)
            continue
        if not g.result.ok or g.result.truncated:
            message = g.result.message if not g.result.ok else (
                f"gold result has more than {config.max_rows} rows (raise evaluate.max_rows)")
            scored[k] = Scored(**base, outcome=GOLD_ERROR, normalized_match=False, valid_sql=False,
                               message=(GOLD_TIMEOUT if g.result.error == TIMEOUT
                                        else "gold query: ") + message, difficulty=g.difficulty)
            continue
        scored[k] = Scored(**base, outcome="", normalized_match=False, valid_sql=False,
                           difficulty=g.difficulty, gold_rows=len(g.result.rows or []))
        if runs_as_gold(item):
            s = scored[k]
            s.outcome, s.normalized_match, s.valid_sql = CORRECT, g.normalized is not None, True
            s.exact_set_match = matches_gold(item.pred, g.structure, read_schema(item.db_path))
            s.pred_rows, s.seconds = s.gold_rows, round(g.result.seconds, 4)
            s.soft_f1 = 1.0 if config.bird else None
            continue
        pred_index.append(k)
        pred_tasks.append((item, g, keep_distinct, config.timeout_s, config.max_rows))

    with _progress(len(pred_tasks), "predictions", config.progress) as bar:
        answers = run_tasks(_run_prediction, pred_tasks, workers=config.workers,
                            hard_timeout_s=hard_timeout_s, on_result=lambda i, r: bar.update())
    for k, answer in zip(pred_index, answers):
        s = scored[k]
        assert s is not None
        if isinstance(answer, TaskFailed):
            s.outcome = TIMEOUT if answer.reason == "hung" else EXEC_ERROR
            s.message = answer.message
        else:
            (s.outcome, s.normalized_match, s.valid_sql, s.message, s.pred_rows, s.seconds,
             s.soft_f1), s.exact_set_match = answer
            s.seconds = round(s.seconds, 4)
        if config.bird and s.outcome != CORRECT:
            s.soft_f1 = s.soft_f1 or 0.0
    results = [s for s in scored if s is not None]
    if config.bird and config.bird.ves_repeats:
        _time_correct(items, results, config)
    if config.bird is None and (config.test_suite or config.plug_value):  # Spider's own metric
        from text2sql.evaluation.test_suite import score_test_suites  # it imports this module

        known = {key: g.result for key, g in zip(unique, gold) if not isinstance(g, TaskFailed)}
        score_test_suites(items, results, config, known)
    return results


def _time_correct(items: Sequence[EvalItem], scored: list[Scored], config: EvalConfig) -> None:
    """R-VES rewards: each prediction BIRD scores correct timed with its gold query; the rest 0."""
    assert config.bird is not None
    repeats, timeout_s = config.bird.ves_repeats, config.bird.ves_timeout_s
    timed = [k for k, s in enumerate(scored) if s.outcome == CORRECT]
    tasks = [(items[k].db_path, items[k].pred, items[k].gold, repeats, timeout_s,
              config.max_rows) for k in timed]
    for s in scored:
        s.ves_reward = 0.0 if s.outcome != GOLD_ERROR else None
    with _progress(len(tasks), "R-VES timings", config.progress) as bar:
        answers = run_tasks(time_pair, tasks, workers=config.workers,
                            hard_timeout_s=hard_timeout(timeout_s * repeats),
                            on_result=lambda i, r: bar.update())
    for k, answer in zip(timed, answers):
        if isinstance(answer, TaskFailed):
            scored[k].message = f"R-VES: {answer.message}"
        else:
            scored[k].ves_reward, message = answer
            scored[k].message = message or scored[k].message


def score(examples: Sequence[Mapping[str, Any]], predictions: Mapping[str, str], *,
          timeout_s: float = 5.0, max_rows: int = 100_000, workers: int = 0,
          keep_distinct: bool = False, progress: bool = False) -> list[Scored]:
    """Score prepared rows (id, db_id, db_path, question, query) against predictions by id."""
    items = [EvalItem(str(ex["id"]), ex["db_id"], ex.get("db_path"), ex["question"],
                      ex["query"], predictions.get(ex["id"]) or "") for ex in examples]
    return score_items(items, EvalConfig(timeout_s, max_rows, workers, keep_distinct, progress))


# --- summaries -------------------------------------------------------------------

def _rate(k: int, n: int) -> float:
    return round(k / n, 4) if n else 0.0


def summarize(results: Iterable[Scored]) -> dict[str, float]:
    """Flat metrics over the scorable examples (gold errors excluded, counted apart).

    Keys: execution_accuracy, exact_set_match, normalized_match, valid_sql_rate, n,
    gold_errors, gold_timeouts (gold errors over the gold timeout); with BIRD's semantics
    soft_f1, r_ves and BIRD's difficulty table (:func:`text2sql.evaluation.bird.bird_metrics`);
    execution_accuracy_ci95_low/high (percentile bootstrap interval, questions resampled,
    fixed seed: :mod:`text2sql.evaluation.significance`); per difficulty level
    L: execution_accuracy_L, exact_set_match_L, normalized_match_L, n_L; per outcome O (correct, wrong_result and
    each error kind): outcome_O, a count.
    """
    results = list(results)
    scorable = [r for r in results if r.outcome != GOLD_ERROR]
    n = len(scorable)
    counts = Counter(r.outcome for r in scorable)
    metrics: dict[str, float] = {
        "execution_accuracy": _rate(counts[CORRECT], n),
        "exact_set_match": _rate(sum(r.exact_set_match for r in scorable), n),
        "normalized_match": _rate(sum(r.normalized_match for r in scorable), n),
        "valid_sql_rate": _rate(sum(r.valid_sql for r in scorable), n),
        "n": n,
        "gold_errors": len(results) - n,
        "gold_timeouts": sum(r.outcome == GOLD_ERROR and r.message.startswith(GOLD_TIMEOUT)
                             for r in results),
    }
    if any(r.soft_f1 is not None for r in scorable):
        metrics.update(bird_metrics(scorable))
    low, high = bootstrap_interval([r.outcome == CORRECT for r in scorable])
    metrics["execution_accuracy_ci95_low"], metrics["execution_accuracy_ci95_high"] = low, high
    levels = list(LEVELS) + ([UNKNOWN_LEVEL] if any(r.difficulty == UNKNOWN_LEVEL
                                                   for r in scorable) else [])
    for level in levels:
        group = [r for r in scorable if r.difficulty == level]
        metrics[f"execution_accuracy_{level}"] = _rate(sum(r.outcome == CORRECT for r in group),
                                                       len(group))
        metrics[f"exact_set_match_{level}"] = _rate(sum(r.exact_set_match for r in group),
                                                    len(group))
        metrics[f"normalized_match_{level}"] = _rate(sum(r.normalized_match for r in group),
                                                     len(group))
        metrics[f"n_{level}"] = len(group)
    for outcome in OUTCOMES:
        metrics[f"outcome_{outcome}"] = counts[outcome]
    from text2sql.evaluation.test_suite import test_suite_metrics  # it imports this module

    metrics.update(test_suite_metrics(scorable, levels))
    return metrics


TURN_BUCKETS = 4  # turns 1, 2, 3 and 4-or-later, as SParC's papers report them


def turn_bucket(turn: int) -> str:
    """``turn_1`` ... ``turn_4plus`` for a 0-based turn index."""
    return f"turn_{turn + 1}" if turn + 1 < TURN_BUCKETS else f"turn_{TURN_BUCKETS}plus"


def conversation_metrics(results: Iterable[Scored], turns: Mapping[str, tuple[str, int]]
                         ) -> dict[str, float]:
    """Multi-turn metrics over the scorable examples that ``turns`` places in a conversation
    (``id -> (conversation, 0-based turn)``): question-level execution accuracy (every turn),
    interaction-level (every scored turn of a conversation right) and by turn
    (``execution_accuracy_turn_K``, ``n_turn_K``)."""
    scorable = [r for r in results if r.outcome != GOLD_ERROR and r.id in turns]
    conversations: dict[str, list[bool]] = {}
    by_turn: dict[str, list[bool]] = {}
    for r in scorable:
        conversation, turn = turns[r.id]
        conversations.setdefault(conversation, []).append(r.outcome == CORRECT)
        by_turn.setdefault(turn_bucket(turn), []).append(r.outcome == CORRECT)
    metrics: dict[str, float] = {
        "question_execution_accuracy": _rate(sum(r.outcome == CORRECT for r in scorable),
                                             len(scorable)),
        "interaction_execution_accuracy": _rate(sum(all(c) for c in conversations.values()),
                                                len(conversations)),
        "n_interactions": len(conversations),
    }
    for bucket in [turn_bucket(t) for t in range(TURN_BUCKETS)]:
        group = by_turn.get(bucket, [])
        metrics[f"execution_accuracy_{bucket}"] = _rate(sum(group), len(group))
        metrics[f"n_{bucket}"] = len(group)
    return metrics


def difficulty_rows(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Rows of the accuracy-by-difficulty plot (a DVC bar chart), ``all`` last."""
    rows = [{"difficulty": level, "n": metrics[f"n_{level}"],
             "execution_accuracy": metrics[f"execution_accuracy_{level}"],
             "exact_set_match": metrics[f"exact_set_match_{level}"],
             "normalized_match": metrics[f"normalized_match_{level}"]}
            for level in (*LEVELS, UNKNOWN_LEVEL) if f"n_{level}" in metrics]
    rows.append({"difficulty": "all", "n": metrics["n"],
                 "execution_accuracy": metrics["execution_accuracy"],
                 "exact_set_match": metrics["exact_set_match"],
                 "normalized_match": metrics["normalized_match"]})
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = shorten(" ".join(str(text).split()), limit)
    return text.replace("|", "\\|").replace("`", "'")


def render_report(results: Sequence[Scored], metrics: Mapping[str, float], *,
                  title: str = "Evaluation", settings: str = "", examples: int = 3,
                  skipped: Sequence[tuple[str, str]] = ()) -> str:
    """A markdown summary for a pull request: overall, by difficulty, by outcome, examples;
    ``skipped``: the ``(id, db_id)`` of examples left out for a missing database file."""
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"### {title}", ""]
    if settings:
        lines += [settings, ""]
    lines += ["| metric | value |", "|---|---|",
              f"| execution accuracy | **{pct(metrics['execution_accuracy'])}** |",
              *([f"| test-suite accuracy (Spider's) | {pct(metrics['test_suite_accuracy'])} |"]
                if "test_suite_accuracy" in metrics else []),
              f"| exact set match (Spider's) | {pct(metrics['exact_set_match'])} |",
              f"| normalized match | {pct(metrics['normalized_match'])} |",
              *([f"| Soft-F1 (BIRD's) | {pct(metrics['soft_f1'])} |"] if "soft_f1" in metrics
                else []),
              *([f"| R-VES (BIRD's, machine-dependent) | {pct(metrics['r_ves'])} |"]
                if "r_ves" in metrics else []),
              f"| valid SQL | {pct(metrics['valid_sql_rate'])} |",
              f"| examples scored | {int(metrics['n'])} |",
              f"| gold errors (not scored) | {int(metrics['gold_errors'])} |",
              f"| gold queries over the gold timeout | {int(metrics['gold_timeouts'])} |", ""]
    if "interaction_execution_accuracy" in metrics:
        lines[-1:-1] = [
            f"| question execution accuracy (every turn) | "
            f"{pct(metrics['question_execution_accuracy'])} |",
            f"| interaction execution accuracy (every turn right) | "
            f"**{pct(metrics['interaction_execution_accuracy'])}** |",
            f"| conversations | {int(metrics['n_interactions'])} |"]
        lines += ["| turn | n | execution accuracy |", "|---|---:|---:|"]
        lines += [f"| {b.removeprefix('turn_').replace('plus', ' and later')} | "
                  f"{int(metrics[f'n_{b}'])} | {pct(metrics[f'execution_accuracy_{b}'])} |"
                  for b in (turn_bucket(t) for t in range(TURN_BUCKETS))]
        lines.append("")
    lines += bird_report_lines(metrics)
    lines += ["| difficulty | n | execution accuracy | exact set match | normalized match |",
              "|---|---:|---:|---:|---:|"]
    for row in difficulty_rows(metrics):
        lines.append(f"| {row['difficulty']} | {row['n']} | {pct(row['execution_accuracy'])} "
                     f"| {pct(row['exact_set_match'])} | {pct(row['normalized_match'])} |")
    lines += ["", "| outcome | count | share |", "|---|---:|---:|"]
    for outcome in OUTCOMES:
        c = int(metrics[f"outcome_{outcome}"])
        if c:
            lines.append(f"| {outcome} | {c} | {pct(_rate(c, int(metrics['n'])))} |")
    failures = [r for r in results if r.outcome not in (CORRECT, GOLD_ERROR)]
    if failures and examples:
        lines += ["", "<details><summary>Failed examples (first "
                  f"{examples} per outcome)</summary>", "",
                  "| id | outcome | question | gold | predicted | message |",
                  "|---|---|---|---|---|---|"]
        shown: Counter = Counter()
        for r in failures:
            if shown[r.outcome] < examples:
                shown[r.outcome] += 1
                lines.append(f"| {r.id} | {r.outcome} | {_cell(r.question)} | `{_cell(r.gold)}` "
                             f"| `{_cell(r.pred)}` | {_cell(r.message, 80)} |")
        lines += ["", "</details>"]
    gold_errors = [r for r in results if r.outcome == GOLD_ERROR]
    if gold_errors:
        lines += ["", "Gold errors: " + "; ".join(f"{r.id} ({_cell(r.message, 80)})"
                                                  for r in gold_errors[:10])
                  + (" …" if len(gold_errors) > 10 else "")]
    if skipped:
        by_db: dict[str, list[str]] = {}
        for example_id, db_id in skipped:
            by_db.setdefault(db_id, []).append(example_id)
        lines += ["", f"Left out, no SQLite file: {len(skipped)} examples on "
                  f"{len(by_db)} databases: " + "; ".join(
                      f"{db} ({len(ids)}: {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''})"
                      for db, ids in sorted(by_db.items()))]
    return "\n".join(lines) + "\n"


# The headline metrics (metrics/eval.json): what `dvc exp show` and `dvc metrics diff`
# lead with. The breakdown by difficulty and outcome goes to its own file.
HEADLINE_METRICS = ("execution_accuracy", "exact_set_match", "normalized_match", "valid_sql_rate",
                    "soft_f1", "r_ves", "n", "gold_errors", "skipped_missing_database",
                    "question_execution_accuracy", "interaction_execution_accuracy",
                    "n_interactions", "test_suite_accuracy")


@dataclass(frozen=True)
class OutputPaths:
    results: Path  # per-example JSONL
    metrics: Path  # flat JSON, the headline metrics
    breakdown: Path  # flat JSON, by difficulty and by outcome
    plot: Path  # accuracy by difficulty, CSV
    report: Path  # markdown


def write_outputs(results: Sequence[Scored], paths: OutputPaths, *, title: str,
                  settings: str = "", examples: int = 3,
                  skipped: Sequence[tuple[str, str]] | None = None,
                  turns: Mapping[str, tuple[str, int]] | None = None) -> dict[str, float]:
    """Write the five outputs (each atomically) and return all the metrics.

    ``skipped`` (examples left out for a missing database, when that was asked for)
    adds ``skipped_missing_database`` to the metrics and the list to the report.
    ``turns`` (multi-turn data: ``id -> (conversation, turn)``) adds
    :func:`conversation_metrics`.
    Per-example timings are left out of the results file: the same predictions give
    the same bytes.
    """
    metrics = summarize(results)
    if skipped is not None:
        metrics["skipped_missing_database"] = len(skipped)
    if turns:
        metrics.update(conversation_metrics(results, turns))
    write_jsonl(paths.results, (without_runtime(as_dict(r)) for r in results))
    write_json(paths.metrics, {k: v for k, v in metrics.items() if k in HEADLINE_METRICS})
    write_json(paths.breakdown, {k: v for k, v in metrics.items() if k not in HEADLINE_METRICS})
    write_text(paths.plot, _csv(difficulty_rows(metrics)))
    write_text(paths.report, render_report(results, metrics, title=title, settings=settings,
                                           examples=examples, skipped=skipped or ()))
    return metrics


def settings_line(config: EvalConfig) -> str:
    gold = config.gold_timeout_s or config.timeout_s
    line = (f"Per-query timeout {config.timeout_s:g} s (gold {gold:g} s), at most "
            f"{config.max_rows} rows, ")
    if config.bird is None:
        return line + (f"Spider's semantics, DISTINCT "
                       f"{'kept' if config.keep_distinct else 'removed (official default)'}"
                       + (", gold values plugged in (test-suite accuracy)" if config.plug_value
                          else "") + ".")
    timed = (f"R-VES from {config.bird.ves_repeats} timings of at most "
             f"{config.bird.ves_timeout_s:g} s each" if config.bird.ves_repeats
             else "R-VES not timed (evaluate.ves_repeats: 0)")
    return line + f"BIRD's semantics (set equality, queries as written), {timed}."


# Left out of a row when unset: BIRD's (Spider semantics) and the test suite's (no suite scored)
_OPTIONAL_FIELDS = ("bird_difficulty", "soft_f1", "ves_reward", "test_suite",
                    "test_suite_failed_on")


def as_dict(r: Scored) -> dict[str, Any]:
    row = asdict(r)
    for key in _OPTIONAL_FIELDS:
        if row[key] is None:
            del row[key]
    return row


