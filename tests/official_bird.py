"""BIRD's own verdicts, from a checkout of bird-bench/mini_dev (not part of this repository):

    python tests/official_bird.py MINI_DEV_DIR pairs DB_ROOT pairs.jsonl out.jsonl
    python tests/official_bird.py MINI_DEV_DIR ves timings.jsonl out.jsonl

``pairs``: for each (gold, pred, db_id) line, EX and Soft-F1 as ``execute_model`` of
``evaluation/evaluation_ex.py`` and ``evaluation_f1.py`` give them (a failing query scores 0),
on ``DB_ROOT/<db_id>/<db_id>.sqlite``; then the difficulty tables of ``compute_acc_by_diff``
and ``compute_f1_by_diff`` as one last line. ``ves``: for each line of paired timings
(``gold``, ``pred`` seconds), the reward of ``evaluation_ves.py``'s ``execute_model`` with its
``execute_sql`` replaced by one that returns those timings (and equal results), and
``compute_ves`` of all the rewards as one last line.

The evaluator imports ``func_timeout``, ``psycopg2``, ``pymysql`` and ``numpy``; the first
three are stood in for by empty modules here (the timeout is not needed: no checked query runs
long; the database drivers are for MySQL and PostgreSQL), numpy must be installed.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path


def _stubs() -> None:
    def func_timeout(timeout, fn, args=(), kwargs=None):
        return fn(*args, **(kwargs or {}))

    timeout = types.ModuleType("func_timeout")
    timeout.func_timeout = func_timeout
    timeout.FunctionTimedOut = type("FunctionTimedOut", (Exception,), {})
    sys.modules["func_timeout"] = timeout
    for name in ("psycopg2", "pymysql"):
        sys.modules.setdefault(name, types.ModuleType(name))


def official_pairs(mini_dev: str, db_root: str, pairs: str, out_path: str) -> None:
    import evaluation_ex
    import evaluation_f1

    rows = [json.loads(line) for line in open(pairs)]
    ex_results, f1_results = [], []
    with open(out_path, "w") as out:
        for i, r in enumerate(rows):
            db = f"{db_root}/{r['db_id']}/{r['db_id']}.sqlite"
            ex = evaluation_ex.execute_model(r["pred"], r["gold"], db, i, 30.0, "SQLite")
            f1 = evaluation_f1.execute_model(r["pred"], r["gold"], db, i, 30.0, "SQLite")
            ex_results.append(ex)
            f1_results.append(f1)
            out.write(json.dumps({**r, "ex": ex["res"], "f1": f1["res"]}) + "\n")
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as diff:
            diff.writelines(json.dumps({"difficulty": r["difficulty"]}) + "\n" for r in rows)
        ex_table = evaluation_ex.compute_acc_by_diff(ex_results, diff.name)
        f1_table = evaluation_f1.compute_f1_by_diff(f1_results, diff.name)
        Path(diff.name).unlink()
        out.write(json.dumps({"ex_table": ex_table, "f1_table": f1_table}) + "\n")


def official_ves(mini_dev: str, timings: str, out_path: str) -> None:
    import evaluation_ves

    rows = [json.loads(line) for line in open(timings)]
    rewards = []
    with open(out_path, "w") as out:
        for i, r in enumerate(rows):
            script = iter([[(1,)], [(1,)]] + [t for pair in zip(r["pred"], r["gold"])
                                              for t in pair])

            def execute_sql(sql, db_path, sql_dialect, return_time=False, _next=script):
                return next(_next)

            evaluation_ves.execute_sql = execute_sql
            result = evaluation_ves.execute_model("p", "g", "db", i, len(r["gold"]), 30.0,
                                                  "SQLite")
            rewards.append(result)
            out.write(json.dumps({**r, "reward": result["reward"]}) + "\n")
        out.write(json.dumps({"r_ves": evaluation_ves.compute_ves(rewards)}) + "\n")


if __name__ == "__main__":
    _stubs()
    sys.path.insert(0, f"{sys.argv[1]}/evaluation")
    if sys.argv[2] == "pairs":
        official_pairs(sys.argv[1], *sys.argv[3:6])
    else:
        official_ves(sys.argv[1], *sys.argv[3:5])
