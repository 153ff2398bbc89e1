"""Spider's test-suite accuracy: a prediction is right only if it matches the gold result on
every database of its db_id's folder, as taoyds/test-suite-sql-eval ``exec_eval.py``
``eval_exec_match`` scores it (``evaluation.py --etype exec``).

The official layout is ``database/<db_id>/*.sqlite``: the example's own file plus copies
with other rows. Comparison, DISTINCT rule and ``postprocess`` are the execution match of
:mod:`text2sql.evaluation.compare`; queries run read-only under the same limits and worker
pool as every other query (:mod:`text2sql.sql.sqlite`, :mod:`text2sql.sql.workerpool`).
Each distinct (database file, gold SQL) runs once (the official code runs the gold again for
every prediction and every database). A prediction already wrong on its own database is
wrong (no further query runs), and one that is the gold text itself is right wherever the
gold runs. ``plug_value`` follows the official flag (:func:`plugged_predictions`).
See docs/evaluation.md for the choices (reported only where a folder holds a suite).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from text2sql.evaluation.compare import order_matters, prepare_for_execution, results_match
from text2sql.io import DataError
from text2sql.sql.sqlite import ExecResult, cached_connection, execute, hard_timeout
from text2sql.sql.workerpool import TaskFailed, heartbeat, run_tasks

if TYPE_CHECKING:  # scoring imports this module where it runs; types only here
    from text2sql.evaluation.scoring import EvalConfig, EvalItem, Scored

SQLITE_HEADER = b"SQLite format 3\x00"
# Candidates tried per prediction with plug_value at most (the official code has no bound:
# len(gold values) ** slots of them); past it a prediction keeps the verdict of those tried.
MAX_PLUGGED = 10_000


def suite_databases(db_path: str) -> tuple[str, ...]:
    """The databases of ``db_path``'s test suite: every file of its folder whose name holds
    ``.sqlite`` (as ``exec_eval.py`` lines 200-201 list them), ``db_path`` first.

    Raises :class:`DataError` when such a file is not an SQLite database (a journal, a
    folder, a truncated copy): the official evaluator would stop on it too.
    """
    own = Path(db_path)
    others = sorted(p for p in own.parent.iterdir() if ".sqlite" in p.name and p.name != own.name)
    for p in others:
        header = b""
        if p.is_file():
            with open(p, "rb") as f:
                header = f.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise DataError(
                f"{p}: not an SQLite database, but its name holds '.sqlite', so it belongs to "
                f"the test suite of {own.parent.name} (every such file of {own.parent}/ is one "
                "of its databases, as in Spider's official evaluator); move it out of the "
                "folder, or set evaluate.test_suite: false to score on "
                f"{own.name} only")
    return (db_path, *map(str, others))


# --- plug_value --------------------------------------------------------------------------
# The official parse.py (get_all_preds_for_execution, lines 131-136) finds values with
# sqlparse's lexer. This lexer keeps the token boundaries of sqlparse 0.4-0.6
# (sqlparse/keywords.py SQL_REGEX, tried in order, first match wins) for all that decides a
# value: strings, numbers with their sign, names, operators; whitespace is dropped.
_TOKEN = re.compile("|".join(f"(?:{r})" for r in (
    r"(?P<comment>(?:--|\# ).*?(?:\r\n|\r|\n|$))",
    r"(?P<space>\s+)",
    r":=|::|\*|`(?:``|[^`])*`|´(?:´´|[^´])*´|\?|%(?:\(\w+\))?s|(?<!\w)[$:?]\w+|\\\w+",
    r"(?:CASE|IN|VALUES|USING|FROM|AS)\b|(?:@|\#\#|\#)[A-ZÀ-Ü]\w+",
    r"[A-ZÀ-Ü]\w*(?=\s*\.(?!\d))|(?<=\.)[A-ZÀ-Ü]\w*|[A-ZÀ-Ü]\w*(?=\()",
    r"-?0x[\dA-F]+|-?\d+(?:\.\d+)?E-?\d+",
    r"(?![_A-ZÀ-Ü])-?(?:\d+(?:\.\d*)|\.\d+)(?![_A-ZÀ-Ü])|(?![_A-ZÀ-Ü])-?\d+(?![_A-ZÀ-Ü])",
    r"(?P<string>'(?:''|\\'|[^'])*'|\"(?:\"\"|\\\"|[^\"])*\"|\"\"|\".*?[^\\]\")",
    r"(?<![\w\])])\[[^\]\[]+\]",
    r"(?:AT|WITH')\s+TIME\s+ZONE\s+'[^']+'|GO\s\d+\b",
    r"\w[$#\w]*|[;:()\[\],.]|->>?|\#>>?|@>|<@|\?\|?|\?&|-|\#-|[<>=~!]+|[+/@#%^&|^-]+|.",
)), re.IGNORECASE | re.DOTALL)
_SLOT = "VALUERARE"  # parse.py line 10


def _tokens(sql: str) -> Iterator[tuple[str, bool]]:
    """``(text, is a string literal)`` of each token but whitespace."""
    for m in _TOKEN.finditer(sql):
        if m.group("space") is None:
            yield m.group(0), m.group("string") is not None


def _values_and_template(sql: str) -> tuple[list[str], list[str]]:
    """The values of ``sql`` and its lower-cased tokens with each value a slot, the steps of
    parse.py ``extract_query_values`` (reformat_query, replace_values, strip_query)."""
    query = " ".join(t for t, _ in _tokens(sql.strip().replace(";", "").replace("\t", "")))
    for star in ("t1.*", "t2.*", "t3.*", "T1.*", "T2.*", "T3.*"):  # parse.py lines 86-88
        query = query.replace(star, "*")
    values = []
    for text, is_string in _tokens(query):  # parse.py lines 48-54
        if is_string:
            values.append(text)
            query = query.replace(text.strip(), _SLOT)
    words = query.split()
    floats = re.findall(r"[-+]?\d*\.\d+", query)  # parse.py lines 57-59
    values += [w for w in words if w in floats]
    words = [_SLOT if w in floats else w for w in words]
    ints = [i.strip() for i in re.findall(r"[^tT]\d+", " ".join(words))]  # lines 62-65
    values += [w for w in words if w in ints]
    words = [_SLOT if w in ints else w for w in words]
    template = []
    for w in words:  # parse.py lines 68-79
        if "." in w and re.findall(r"[Tt]\d+\.", w):
            template += [t.lower() for t in w.replace(".", " . ").split()]
        elif w:
            template.append(w.lower())
    return values, template


def plugged_predictions(gold: str, pred: str) -> Iterator[str]:
    """``pred`` with every way of putting the gold query's values in its value slots, the
    candidates ``exec_eval.py`` line 208 tries after ``pred`` itself with ``--plug_value``
    (parse.py lines 120-136); at most :data:`MAX_PLUGGED`."""
    gold_values = list(dict.fromkeys(_values_and_template(gold)[0]))
    template = _values_and_template(pred)[1]
    slots = [k for k, w in enumerate(template) if w == _SLOT.lower()]
    for values in itertools.islice(itertools.product(gold_values, repeat=len(slots)),
                                   MAX_PLUGGED):
        filled = list(template)
        for k, v in zip(slots, values):
            filled[k] = v
        yield " ".join(filled)


# --- work done in worker processes ------------------------------------------------------

@dataclass(frozen=True)
class SuiteTask:
    """One prediction against its test suite: gold rows per database, in suite order."""

    gold: str
    pred: str
    databases: tuple[str, ...]
    gold_rows: tuple[list[tuple], ...]
    ordered: bool
    plug_value: bool
    right_on_own: bool  # its verdict on databases[0], known from execution accuracy
    keep_distinct: bool
    timeout_s: float
    max_rows: int


def _run_gold(task: tuple[str, str, bool, float, int]) -> ExecResult:
    db_path, gold, keep_distinct, timeout_s, max_rows = task
    heartbeat(db_path)
    return execute(cached_connection(db_path), prepare_for_execution(gold, keep_distinct),
                   timeout_s=timeout_s, max_rows=max_rows)


def _fails_on(task: SuiteTask, sql: str, skip_own: bool) -> str | None:
    """The first database where ``sql`` does not give the gold result, ``None`` if none."""
    for k, (db_path, gold_rows) in enumerate(zip(task.databases, task.gold_rows)):
        if k == 0 and skip_own:
            continue
        heartbeat(db_path)  # the hard time limit holds per query
        got = execute(cached_connection(db_path), sql, timeout_s=task.timeout_s,
                      max_rows=task.max_rows)
        if not got.ok or got.truncated or not results_match(gold_rows, got.rows or [],
                                                            task.ordered):
            return db_path
    return None


def _run_suite(task: SuiteTask) -> tuple[bool, str | None]:
    """``(right on every database, the first database it failed on)``; with plug_value the
    prediction as written, then each plugged candidate (``exec_eval.py`` lines 207-242)."""
    pred = prepare_for_execution(task.pred, task.keep_distinct)
    failed = _fails_on(task, pred, True) if task.right_on_own else task.databases[0]
    if failed is None or not task.plug_value:
        return failed is None, failed
    gold = prepare_for_execution(task.gold, task.keep_distinct)
    for candidate in plugged_predictions(gold, pred):
        if _fails_on(task, candidate, False) is None:
            return True, None
    return False, failed


# --- the parent's side --------------------------------------------------------------------

def suite_gold_queries(items: Sequence[EvalItem], suites: Mapping[str, tuple[str, ...]]
                       ) -> list[tuple[str, str]]:
    """The distinct (database file, gold SQL) pairs the suites of ``items`` need: the gold
    cache, each runs once whatever the number of predictions of that gold."""
    return list(dict.fromkeys((db, item.gold) for item in items
                              for db in suites[item.db_path]))


def score_test_suites(items: Sequence[EvalItem], scored: Sequence[Scored], config: EvalConfig,
                      known: Mapping[tuple[str, str], ExecResult] | None = None) -> None:
    """Set ``test_suite`` and ``test_suite_failed_on`` of each scored example when some
    folder holds a test suite or ``config.plug_value`` is on; else leave them ``None``.

    ``items`` are :class:`~text2sql.evaluation.scoring.EvalItem` and ``scored`` their
    :class:`~text2sql.evaluation.scoring.Scored`, as ``score_items`` made them. A gold
    query that fails on a database of the suite leaves ``test_suite`` ``None`` and names that
    database (counted as ``test_suite_gold_errors``): the official evaluator stops on it.
    ``known``: gold results already run, by (database file, gold SQL), not run again.
    """
    from text2sql.evaluation.scoring import CORRECT, GOLD_ERROR, _progress, runs_as_gold

    suites: dict[str, tuple[str, ...]] = {}
    todo = [(item, s) for item, s in zip(items, scored) if s.outcome != GOLD_ERROR]
    for item, _ in todo:  # test_suite false (with plug_value): the own database only
        if item.db_path not in suites:
            suites[item.db_path] = suite_databases(item.db_path) if config.test_suite \
                else (item.db_path,)
    if not config.plug_value and all(len(s) == 1 for s in suites.values()):
        return  # one database per db_id: test-suite accuracy would be EX; not reported
    needs_run, needs_gold = [], []
    for item, s in todo:
        right = s.outcome == CORRECT
        if not config.plug_value and (not right or len(suites[item.db_path]) == 1):
            s.test_suite = right
            s.test_suite_failed_on = None if right else Path(item.db_path).name
            continue
        needs_gold.append(item)
        if not (config.plug_value and not right) and runs_as_gold(item):
            continue  # the gold text itself: right wherever the gold runs
        needs_run.append((item, s))

    hard_timeout_s = hard_timeout(config.timeout_s)
    known = known or {}
    # Sorted by database: a worker keeps a few connections open (cached_connection), and
    # opening one costs more than most Spider queries.
    unique = sorted((key for key in suite_gold_queries(needs_gold, suites) if key not in known),
                    key=lambda key: key[0])
    tasks = [(db, gold, config.keep_distinct, config.timeout_s, config.max_rows)
             for db, gold in unique]
    with _progress(len(tasks), "test-suite gold queries", config.progress) as bar:
        answers = run_tasks(_run_gold, tasks, workers=config.workers,
                            hard_timeout_s=hard_timeout_s, on_result=lambda i, r: bar.update())
    gold_results: dict[tuple[str, str], list[tuple] | None] = {}
    for key, answer in [*known.items(), *zip(unique, answers)]:
        ok = isinstance(answer, ExecResult) and answer.ok and not answer.truncated
        gold_results[key] = (answer.rows or []) if ok else None

    def gold_rows(item: EvalItem) -> tuple[list[tuple], ...] | None:
        rows = tuple(gold_results[(db, item.gold)] for db in suites[item.db_path])
        return None if any(r is None for r in rows) else rows  # type: ignore[return-value]

    scored_of = {id(item): s for item, s in todo}
    running = {id(item) for item, _ in needs_run}
    for item in needs_gold:
        if gold_rows(item) is None:  # not scored; where the gold query fails is recorded
            s = scored_of[id(item)]
            s.test_suite = None
            s.test_suite_failed_on = next(Path(db).name for db in suites[item.db_path]
                                          if gold_results[(db, item.gold)] is None)
        elif id(item) not in running:
            scored_of[id(item)].test_suite = True
    run = sorted(((item, s) for item, s in needs_run if gold_rows(item) is not None),
                 key=lambda pair: pair[0].db_path)
    suite_tasks = [SuiteTask(item.gold, item.pred, suites[item.db_path], gold_rows(item),
                             order_matters(item.gold), config.plug_value,
                             s.outcome == CORRECT, config.keep_distinct, config.timeout_s,
                             config.max_rows) for item, s in run]
    with _progress(len(suite_tasks), "test-suite predictions", config.progress) as bar:
        verdicts = run_tasks(_run_suite, suite_tasks, workers=config.workers,
                             hard_timeout_s=hard_timeout_s, on_result=lambda i, r: bar.update())
    for (item, s), verdict in zip(run, verdicts):
        if isinstance(verdict, TaskFailed):  # its worker hung or died: wrong, as a timeout
            s.test_suite, failed = False, verdict.step or item.db_path
        else:
            s.test_suite, failed = verdict
        s.test_suite_failed_on = failed and Path(failed).name


def test_suite_metrics(scorable: Sequence[Scored], levels: Sequence[str]) -> dict[str, float]:
    """``test_suite_accuracy`` (over the examples with a verdict), ``test_suite_gold_errors``
    and ``test_suite_accuracy_L`` per difficulty level; empty when no example has a verdict."""
    judged = [r for r in scorable if r.test_suite is not None]
    gold_errors = sum(r.test_suite is None and r.test_suite_failed_on is not None
                      for r in scorable)
    if not judged and not gold_errors:
        return {}

    def rate(group: list[Scored]) -> float:
        return round(sum(bool(r.test_suite) for r in group) / len(group), 4) if group else 0.0

    metrics: dict[str, float] = {"test_suite_accuracy": rate(judged),
                                 "test_suite_gold_errors": gold_errors}
    for level in levels:
        metrics[f"test_suite_accuracy_{level}"] = rate([r for r in judged
                                                        if r.difficulty == level])
    return metrics
