"""Running untrusted SQL: error kinds, no database change whatever the SQL, deadlines, limits."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from text2sql.evaluation.scoring import EvalConfig, EvalItem, score_items
from text2sql.sql import sqlite as ex


@pytest.mark.parametrize("sql,kind", [
    ("", ex.EMPTY),
    ("   \n ", ex.EMPTY),
    ("-- nothing but a comment", ex.EMPTY),
    ("SELEC name FROM item", ex.PARSE_ERROR),  # a typo, not an attack
    ("VACUUM", ex.NOT_READ_ONLY),  # a statement, but not a query: refused before SQLite
    ("EXPLAIN SELECT 1", ex.NOT_READ_ONLY),
    ("SELECT name FROM item WHERE", ex.PARSE_ERROR),
    ("SELECT name FROM item WHERE name = 'x", ex.PARSE_ERROR),
    ("SELECT name FROM items", ex.UNKNOWN_TABLE),
    ("SELECT nam FROM item", ex.UNKNOWN_COLUMN),
    ("SELECT id FROM item AS a, item AS b", ex.UNKNOWN_COLUMN),  # ambiguous
    ("SELECT no_such_function(name) FROM item", ex.EXEC_ERROR),
    ("SELECT name FROM item; SELECT 1", ex.NOT_READ_ONLY),
    ("DELETE FROM item", ex.NOT_READ_ONLY),
    ("WITH x AS (SELECT 1) DELETE FROM item", ex.NOT_READ_ONLY),
    ("WITH x AS (SELECT 1) REPLACE INTO item VALUES (1, 'x', 1)", ex.NOT_READ_ONLY),
    ("SELECT randomblob(200000000)", ex.TOO_LARGE),  # over MAX_VALUE_BYTES
])
def test_error_kinds(shop, sql, kind):
    r = ex.run_query(shop, sql, timeout_s=2)
    assert r.error == kind, r.message
    assert r.rows is None and r.message


def test_a_query_runs(shop):
    r = ex.run_query(shop, "SELECT name, price FROM item WHERE id < 3 ORDER BY id;", timeout_s=2)
    assert r.ok and r.rows == [("item0", 0.0), ("item1", 1.5), ("item2", 3.0)]
    assert ex.check_read_only_query("WITH a AS (SELECT 1) SELECT * FROM a") == (None, "")


def test_row_cap(shop):
    r = ex.run_query(shop, "SELECT id FROM item", max_rows=10)
    assert r.ok and r.truncated and len(r.rows) == 10
    assert not ex.run_query(shop, "SELECT id FROM item", max_rows=2000).truncated


RUNAWAY = [
    "SELECT count(*) FROM item a, item b, item c, item d",
    "SELECT a.name FROM item a, item b, item c ORDER BY a.name || b.name || c.name",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
]


@pytest.mark.parametrize("sql", RUNAWAY)
def test_runaway_query_stops_on_time(shop, sql):
    start = time.monotonic()
    r = ex.run_query(shop, sql, timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert r.error == ex.TIMEOUT, r.message
    assert elapsed < 0.5 + 1, f"took {elapsed:.2f} s with a 0.5 s timeout"


def test_runaway_prediction_in_a_worker_stops_on_time(shop):
    item = EvalItem("0", "shop", str(shop), "q", "SELECT count(*) FROM item", RUNAWAY[0])
    start = time.monotonic()
    [scored] = score_items([item], EvalConfig(timeout_s=0.5, workers=1, progress=False))
    elapsed = time.monotonic() - start
    assert scored.outcome == ex.TIMEOUT and "0.5 s" in scored.message
    assert elapsed < 0.5 + 1, f"took {elapsed:.2f} s with a 0.5 s timeout"


ATTACKS = [
    "DROP TABLE item",
    "UPDATE item SET price = 0",
    "INSERT INTO item VALUES (99999, 'x', 1)",
    "REPLACE INTO item VALUES (1, 'x', 1)",
    "DELETE FROM item",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "CREATE INDEX evil ON item (name)",
    "ALTER TABLE item ADD COLUMN evil TEXT",
    "ATTACH DATABASE '{dir}/evil.sqlite' AS evil",
    "PRAGMA journal_mode = WAL",
    "PRAGMA user_version = 7",
    "PRAGMA writable_schema = ON",
    "VACUUM",
    "VACUUM INTO '{dir}/copy.sqlite'",
    "BEGIN EXCLUSIVE",
    "SELECT 1; DROP TABLE item",
    "SELECT * FROM item; UPDATE item SET price = 0",
    "WITH x AS (SELECT 1) UPDATE item SET price = 0",
    "WITH x AS (SELECT 1) INSERT INTO item SELECT 100000, 'x', 1",
    "SELECT * FROM pragma_table_info('item')",
    "REINDEX",
    "ANALYZE",
]


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_database_changes_whatever_the_predictions_say(shop, sample_dir, tmp_path):
    dbs = tmp_path / "database"
    shutil.copytree(sample_dir / "database", dbs)
    shutil.copy(shop, dbs / "shop" / "shop.sqlite")
    before = _hashes(tmp_path)
    items = []
    for k, attack in enumerate(ATTACKS):
        for db in sorted(dbs.glob("*/*.sqlite")):
            items.append(EvalItem(f"{k}-{db.stem}", db.stem, str(db), "q",
                                  "SELECT count(*) FROM sqlite_master",
                                  attack.format(dir=tmp_path)))
    results = score_items(items, EvalConfig(timeout_s=2.0, workers=2, progress=False))
    assert not any(r.valid_sql for r in results)
    # On other databases "no such table: item" may come first; where the table exists
    # every attack is refused as not read-only.
    refused = {r.pred: r.outcome for r in results if r.db_id == "shop"}
    assert set(refused.values()) == {ex.NOT_READ_ONLY}, refused
    assert _hashes(tmp_path) == before  # same files, same bytes: nothing written or created


@pytest.mark.parametrize("attack", ATTACKS)
def test_sqlite_guards_hold_without_the_text_check(shop, attack):
    # The SELECT-only text check is one guard; the connection must hold on its own too.
    before = _hashes(shop.parent)
    conn = ex.open_readonly(shop)
    try:
        conn.execute(attack.format(dir=shop.parent))
        conn.commit()
        refused = False
    except (sqlite3.Error, sqlite3.Warning):
        refused = True
    finally:
        conn.close()
    assert _hashes(shop.parent) == before
    # REINDEX of a database without indexes has nothing to do (so nothing to refuse).
    assert refused or attack == "REINDEX"


def test_open_readonly_needs_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.sqlite"):
        ex.open_readonly(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
