"""Scoring predictions: execution accuracy, exact match and an error breakdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from text2sql.compare import exact_match, order_matters, results_match
from text2sql.execution import open_readonly, execute

CORRECT = "correct"
WRONG_RESULT = "wrong_result"
GOLD_ERROR = "gold_error"  # the dataset's own query fails: a data error, never scored


@dataclass
class Scored:
    id: str
    db_id: str
    question: str
    gold: str
    pred: str
    outcome: str  # correct | wrong_result | an execution error kind | gold_error
    exact_match: bool
    valid_sql: bool
    message: str = ""


def score_one(conn: Any, ex: dict[str, Any], pred_sql: str, *, timeout_s: float,
              max_rows: int) -> Scored:
    gold = execute(conn, ex["query"], timeout_s=timeout_s, max_rows=max_rows)
    em = exact_match(ex["query"], pred_sql)
    base = dict(id=ex["id"], db_id=ex["db_id"], question=ex["question"], gold=ex["query"],
                pred=pred_sql, exact_match=em)
    if not gold.ok:
        return Scored(**base, outcome=GOLD_ERROR, valid_sql=False, message=gold.message)
    pred = execute(conn, pred_sql, timeout_s=timeout_s, max_rows=max_rows)
    if not pred.ok:
        return Scored(**base, outcome=pred.error or "execution_error", valid_sql=False,
                      message=pred.message)
    ok = results_match(gold.rows or [], pred.rows or [], order_matters(ex["query"]))
    return Scored(**base, outcome=CORRECT if ok else WRONG_RESULT, valid_sql=True)


def score(examples: Sequence[dict[str, Any]], predictions: dict[str, str], *,
          timeout_s: float = 5.0, max_rows: int = 10000) -> list[Scored]:
    """Score each example's predicted SQL (by id) against its gold query on its database."""
    conns: dict[str, Any] = {}
    out = []
    try:
        for ex in examples:
            db = ex["db_path"]
            if db not in conns:
                conns[db] = open_readonly(db)
            out.append(score_one(conns[db], ex, predictions.get(ex["id"], ""),
                                 timeout_s=timeout_s, max_rows=max_rows))
    finally:
        for c in conns.values():
            c.close()
    return out


def summarize(results: Iterable[Scored]) -> dict[str, float]:
    """Flat metrics: overall rates over scorable examples, and a count per outcome."""
    results = list(results)
    scorable = [r for r in results if r.outcome != GOLD_ERROR]
    n = len(scorable)
    counts = Counter(r.outcome for r in results)
    metrics: dict[str, float] = {
        "execution_accuracy": round(counts[CORRECT] / n, 4) if n else 0.0,
        "exact_match": round(sum(r.exact_match for r in scorable) / n, 4) if n else 0.0,
        "valid_sql_rate": round(sum(r.valid_sql for r in scorable) / n, 4) if n else 0.0,
        "n": n,
        "gold_errors": counts[GOLD_ERROR],
    }
    for outcome, c in sorted(counts.items()):
        if outcome != GOLD_ERROR:
            metrics[f"outcome_{outcome}"] = c
    return metrics


def as_dict(r: Scored) -> dict[str, Any]:
    return asdict(r)
