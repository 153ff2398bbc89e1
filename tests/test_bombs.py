"""Memory and time bombs: each ends within timeout + 2 s, under 2 GiB, database unchanged.

Every bomb runs in ``ask``, in self-consistency voting and in ``evaluate``, each in a
fresh Python process (and in ``ask`` on a DuckDB file and on Parquet files, with DuckDB's own
bombs added), so the peak RSS measured (``wait4``: the process and every
worker it waited for) is that of the bombs alone. Without the byte budget, SQLite's
length and heap limits and the workers' address-space limit, several of these take
gigabytes (``SELECT randomblob(20000000) FROM item`` reached 9.2 GB in ``ask``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import duckdb_copy, make_shop, parquet_folder

TIMEOUT_S = 1.0
MAX_RSS = 2 * 2**30

BOMBS = [
    # huge blobs or strings per row
    "SELECT randomblob(20000000) FROM item",
    "SELECT randomblob(10000000) FROM item",
    "SELECT zeroblob(16000000), zeroblob(16000000) FROM item",
    "SELECT hex(randomblob(8000000)) || name FROM item",
    # string builders
    "SELECT printf('%.*c', 1000000000, 'x')",
    "SELECT length(group_concat(a.name || b.name)) FROM item a, item b",
    "SELECT a.name, group_concat(hex(randomblob(1000))) FROM item a, item b GROUP BY a.name",
    "WITH RECURSIVE s(x) AS (SELECT 'ab' UNION ALL SELECT x || x FROM s) SELECT length(x) FROM s",
    # recursive CTEs
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION SELECT i + 1 FROM n) SELECT count(*) FROM n",
    "WITH RECURSIVE n(i, s) AS (SELECT 1, hex(randomblob(500000)) UNION ALL "
    "SELECT i + 1, s FROM n) SELECT s FROM n",
    # cartesian joins
    "SELECT a.name || b.name || c.name AS x FROM item a, item b, item c ORDER BY x",
    "SELECT * FROM item a, item b, item c",
    "SELECT count(*) FROM item a, item b, item c, item d",
]
# DuckDB's own (SQLite SQL that sqlglot passes through): strings built outside DuckDB's
# memory_limit, lists, recursive CTEs, joins DuckDB cannot shortcut.
DUCKDB_BOMBS = [
    "SELECT repeat('x', 1000000000)",
    "SELECT repeat('x', 20000000) FROM item",
    "SELECT a.name, string_agg(md5(random()), ',') FROM item a, item b GROUP BY a.name",
    "SELECT list(range) FROM range(1000000000)",
    "WITH RECURSIVE n(i, s) AS (SELECT 1, repeat('x', 500000) UNION ALL "
    "SELECT i + 1, s FROM n) SELECT s FROM n",
    "SELECT count(*) FROM item a, item b, item c, item d WHERE a.name || b.name <> d.name",
]

# Run in a fresh interpreter: argv = mode, database, bombs as JSON; prints one JSON
# line per bomb: {"seconds": ..., "outcome": ...}.
RUNNER = r'''
import io, json, sys, time, contextlib
mode, db, bombs, timeout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
out = []
if mode == "ask":
    from text2sql.cli import main
    for sql in bombs:
        err = io.StringIO()
        start = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = main(["ask", "--db", db, "--timeout", str(timeout), "--sql", sql])
        out.append({"seconds": time.monotonic() - start, "outcome": code,
                    "message": err.getvalue()[-200:]})
elif mode == "vote":
    from text2sql.inference.voting import Candidate, choose_all
    for sql in bombs:
        start = time.monotonic()
        [v] = choose_all([(db, [Candidate(sql, sql, -1.0), Candidate(sql, sql, -1.5),
                                Candidate("x", "SELECT count(*) FROM item", -2.0)])],
                         timeout_s=timeout, max_rows=10000, workers=1)
        out.append({"seconds": time.monotonic() - start, "outcome": v.errors[0],
                    "chosen": v.chosen})
else:
    from text2sql.evaluation.scoring import EvalConfig, EvalItem, score_items
    items = [EvalItem(str(k), "shop", db, "q", "SELECT count(*) FROM item", sql)
             for k, sql in enumerate(bombs)]
    start = time.monotonic()
    scored = score_items(items, EvalConfig(timeout_s=timeout, workers=2, progress=False))
    seconds = time.monotonic() - start
    out = [{"seconds": seconds, "outcome": s.outcome} for s in scored]
for o in out:
    print(json.dumps(o))
'''


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return make_shop(tmp_path_factory.mktemp("bombs") / "shop.sqlite")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def run_and_measure(mode: str, db: Path, bombs: list[str]) -> tuple[list[dict], int]:
    """Run the bombs in a fresh interpreter; its outcomes and its peak RSS in bytes
    (``wait4`` reports the larger of the process's own and its reaped workers')."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become the runner, stdout into the pipe
        os.close(read)
        os.dup2(write, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execv(sys.executable, [sys.executable, "-c", RUNNER, mode, str(db), json.dumps(bombs),
                                  str(TIMEOUT_S)])
    os.close(write)
    with os.fdopen(read) as f:
        stdout = f.read()
    _, status, usage = os.wait4(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, stdout[-2000:]
    return [json.loads(line) for line in stdout.splitlines()], usage.ru_maxrss * 1024


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ask", "vote", "evaluate"])
def test_every_bomb_ends_on_time_in_bounded_memory(shop, mode):
    before = _digest(shop.parent)
    start = time.monotonic()
    results, peak_rss = run_and_measure(mode, shop, BOMBS)
    wall = time.monotonic() - start
    assert len(results) == len(BOMBS)
    assert peak_rss < MAX_RSS, f"{mode}: peak RSS {peak_rss / 2**20:.0f} MiB"
    assert _digest(shop.parent) == before
    if mode == "evaluate":  # one run scores every bomb (two workers)
        assert results[0]["seconds"] < len(BOMBS) * (TIMEOUT_S + 2), results
        kinds = {r["outcome"] for r in results}
        assert kinds <= {"too_large", "timeout", "wrong_result"}, kinds
        return
    for sql, r in zip(BOMBS, results, strict=True):
        # One distinct bomb per vote: the same bound as a single query.
        assert r["seconds"] < TIMEOUT_S + 2, (sql, r)
        if mode == "ask":
            assert r["outcome"] in (0, 1), (sql, r)  # answered (row cap) or failed, never killed
        else:
            assert r["outcome"] in ("too_large", "timeout", None), (sql, r)
            if r["outcome"] is not None:
                assert r["chosen"] == 2, (sql, r)  # the candidate that ran wins the vote
    assert wall < 30 + len(BOMBS) * (TIMEOUT_S + 2)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["duckdb", "parquet"])
def test_every_bomb_ends_on_time_in_bounded_memory_on_duckdb(shop, engine, tmp_path):
    """DuckDB runs each query in a worker process under its memory_limit and the worker's
    address-space limit, interrupted at the timeout: the same bounds as SQLite's."""
    folder = tmp_path / engine
    folder.mkdir()
    db = duckdb_copy(shop, folder / "shop.duckdb") if engine == "duckdb" else \
        parquet_folder(shop, folder / "shop")
    before = _digest(db.parent if engine == "duckdb" else db)
    bombs = BOMBS + DUCKDB_BOMBS
    results, peak_rss = run_and_measure("ask", db, bombs)
    assert len(results) == len(bombs)
    assert peak_rss < MAX_RSS, f"{engine}: peak RSS {peak_rss / 2**20:.0f} MiB"
    assert _digest(db.parent if engine == "duckdb" else db) == before
    for sql, r in zip(bombs, results, strict=True):
        assert r["seconds"] < TIMEOUT_S + 2, (sql, r)
        assert r["outcome"] in (0, 1), (sql, r)  # answered (row cap) or failed, never killed
