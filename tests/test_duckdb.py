"""DuckDB and files: ``--db school.duckdb``, a folder or glob of Parquet or CSV files (one
table per file), asked by ``ask`` and ``serve`` read-only, with DuckDB's guards and limits
(:mod:`text2sql.sql.duckdb`). The files are made in the test, by DuckDB itself (``COPY ... TO``);
the contract tests every engine passes are in tests/test_database.py."""

from __future__ import annotations

import hashlib
import resource
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import SCHOOL, ask_exit_status, duckdb_copy, parquet_folder
from text2sql.ask.database import open_database
from text2sql.ask.duckdb import DuckdbDatabase
from text2sql.io import DataError
from text2sql.sql.duckdb import DuckdbSource, beyond_reading, connect, execute, table_name

# endless, in constant memory (DuckDB counts cross joins without making their rows)
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def sha256s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The school database as Parquet files (two of them as CSV), one per table."""
    folder = parquet_folder(SCHOOL, tmp_path_factory.mktemp("files") / "school")
    csv = parquet_folder(SCHOOL, folder.parent / "csv", fmt="csv")
    for table in ("grades", "teachers"):
        (folder / f"{table}.parquet").unlink()
        shutil.move(csv / f"{table}.csv", folder / f"{table}.csv")
    shutil.rmtree(csv)
    return folder


@pytest.fixture(scope="module")
def school_file(tmp_path_factory) -> Path:
    return duckdb_copy(SCHOOL, tmp_path_factory.mktemp("ddb") / "school.duckdb")


def test_open_database_chooses_duckdb_for_files_and_duckdb_files(files, school_file, tmp_path):
    for location in (school_file, files, f"{files}/*.parquet", files / "students.parquet"):
        assert isinstance(open_database(location), DuckdbDatabase), location
    assert open_database(files).name == "school" and open_database(school_file).name == "school"
    assert open_database(f"{files}/*.parquet").schema().table_names == [
        "courses", "enrollments", "students"]
    with pytest.raises(DataError, match="missing.duckdb: DuckDB file not found"):
        open_database(tmp_path / "missing.duckdb")
    with pytest.raises(DataError, match="no CSV or Parquet files"):
        open_database(f"{tmp_path}/*.parquet")
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "a.parquet").write_text("")
    with pytest.raises(DataError, match="table name 'a' is taken"):
        open_database(tmp_path)
    assert [table_name(Path(p)) for p in ("sales-2024.csv", "2024.parquet", "a.b.csv")] == [
        "sales_2024", "t_2024", "a"]


def test_files_are_tables_with_their_columns_and_values(files):
    db = open_database(files)
    schema = db.schema()
    assert sorted(schema.table_names) == ["courses", "enrollments", "grades", "students",
                                          "teachers"]
    assert [(c.name, c.type) for c in schema.table("students").columns][:2] == [
        ("student_id", "integer"), ("name", "varchar")]
    assert db.run("SELECT count(*) FROM students").rows == [(40,)]
    joined = db.run("SELECT t.name, count(*) FROM courses c JOIN teachers t "
                    "ON c.teacher_id = t.teacher_id GROUP BY t.name ORDER BY t.name LIMIT 2")
    assert joined.ok and len(joined.rows) == 2 and joined.columns == ["name", "count_star()"]
    matches = db.value_index().match("Which courses did Wren Falk take?")
    assert ("students", "name", "Wren Falk") in {(m.table, m.column, m.value) for m in matches}
    assert len(db.sample_rows("teachers", 3)) == 3


def test_sqlite_sql_is_translated_to_duckdb(school_file):
    db = open_database(school_file)
    sql = "SELECT group_concat(name), substr(min(name), 1, 3) FROM students GROUP BY year"
    assert "LISTAGG" in db.shown(sql) or "STRING_AGG" in db.shown(sql)
    assert db.run(sql).ok
    assert db.run("SELECT ifnull(NULL, 7)").rows == [(7,)]


@pytest.mark.parametrize("sql", [
    "DELETE FROM students",
    "UPDATE students SET name = 'x'",
    "INSERT INTO students VALUES (99, 'x', 1, 'y')",
    "DROP TABLE students",
    "CREATE TABLE x AS SELECT 1",
    "SELECT 1; DELETE FROM students",
    "COPY students TO '/tmp/stolen.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET memory_limit = '64GB'",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE '/tmp/dump'",
    "CHECKPOINT",
])
def test_writes_and_statements_are_refused_before_duckdb(school_file, sql):
    before = sha256s(school_file.parent)
    result = open_database(school_file).run(sql)
    assert result.error == "not_read_only" and result.rows is None, result
    assert sha256s(school_file.parent) == before


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_parquet('students.parquet')",
    "SELECT * FROM parquet_scan('students.parquet')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM students, 'teachers.csv'",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT current_setting('memory_limit')",
    "SELECT * FROM duckdb_settings()",
    "SELECT getenv('HOME')",
    "SELECT * FROM query('SELECT 1')",
    "SELECT * FROM sqlite_scan('/tmp/x.db', 't')",
    "SELECT * FROM pragma_table_info('students')",
])
def test_file_and_setting_functions_are_refused(files, sql):
    result = open_database(files).run(sql)
    assert result.error in ("not_read_only", "parse_error") and result.rows is None, result


def test_duckdb_itself_refuses_files_and_settings_whatever_gets_past_the_text(files):
    """DuckDB's own limits, without the text guard: the views' files only, settings locked."""
    db = open_database(files)
    conn = connect(db.source)
    try:
        limits = dict(timeout_s=2.0, max_rows=10, max_bytes=2**20)
        assert execute(conn, "SELECT count(*) FROM students", **limits).rows == [(40,)]
        for sql in ("SELECT * FROM read_csv_auto('/etc/passwd')", "SET memory_limit = '64GB'",
                    "SET enable_external_access = true", "COPY students TO '/tmp/t2s.csv'",
                    "INSTALL httpfs"):
            result = execute(conn, sql, **limits)
            assert not result.ok and result.error in ("not_read_only", "execution_error"), sql
        assert not Path("/tmp/t2s.csv").exists()
    finally:
        conn.close()
    ddb = connect(DuckdbSource(file=str(duckdb_copy(SCHOOL, files.parent / "w.duckdb"))))
    try:
        result = execute(ddb, "DELETE FROM students", timeout_s=2.0, max_rows=1, max_bytes=100)
        assert result.error == "not_read_only", result
    finally:
        ddb.close()


def test_beyond_reading_lets_ordinary_queries_through():
    assert beyond_reading("SELECT name, count(*) FROM students GROUP BY name") is None
    assert beyond_reading("SELECT upper(name), setseed FROM s") is None
    assert beyond_reading("WITH x AS (SELECT 1 AS a) SELECT a FROM x") is None


@pytest.mark.parametrize("location", ["file", "files"])
def test_bombs_end_on_time_and_change_nothing(files, school_file, location):
    """A runaway join is interrupted at the timeout; a huge string meets DuckDB's memory limit
    or the worker's; the caller's memory stays flat and every file is unchanged."""
    target = school_file if location == "file" else files
    folder = target.parent if location == "file" else target
    before = sha256s(folder)
    db = open_database(target)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for sql, kinds in [(RUNAWAY, {"timeout"}),
                       ("WITH RECURSIVE n(i) AS (SELECT 1 UNION SELECT i + 1 FROM n) "
                        "SELECT count(*) FROM n", {"timeout", "too_large"}),
                       ("SELECT repeat('x', 1000000000)", {"too_large"}),
                       ("SELECT repeat('x', 20000000) FROM students", {"too_large"}),
                       ("SELECT * FROM students a, students b, students c", {None})]:
        start = time.monotonic()
        result = db.run(sql, timeout_s=1.0, max_rows=1000, max_bytes=16 * 2**20)
        # the bound of tests/test_bombs.py (timeout + 2 s), plus room for a loaded machine
        assert time.monotonic() - start < 1.0 + 4, (sql, result)
        assert result.error in kinds, (sql, result)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss  # KiB
    assert grown < 200 * 2**10, f"the caller grew by {grown / 2**10:.0f} MiB"
    assert sha256s(folder) == before


# --- ask and serve ---------------------------------------------------------------------

def test_ask_answers_over_a_duckdb_file_and_a_folder_of_files(files, school_file, capsys):
    from text2sql.cli import main

    for location in (school_file, files, f"{files}/*.csv"):
        table = "teachers" if str(location).endswith(".csv") else "students"
        assert main(["ask", "--db", str(location), "--sql", f"SELECT count(*) AS n FROM {table}"
                     ]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "SQL (duckdb):" in out and "(1 row;" in out
    assert main(["ask", "--db", str(files), "--sql", "DELETE FROM students"]) == 3
    assert "refused" in capsys.readouterr().err
    assert main(["ask", "--db", str(files), "--sql", "SELECT * FROM read_csv('/etc/passwd')"]) == 3
    assert "reaches files" in capsys.readouterr().err
    assert main(["ask", "--db", str(files), "--timeout", "0.5", "--sql", RUNAWAY]) == 1
    assert "[timeout]" in capsys.readouterr().err


def test_serve_answers_over_duckdb_and_parquet(files, school_file, tmp_path, repo_root):
    from tests.test_serve import start_server

    shutil.copy(school_file, tmp_path / "school.duckdb")
    shutil.copy(files / "students.parquet", tmp_path / "students.parquet")
    shutil.copytree(files, tmp_path / "files")
    listing = tmp_path / "databases.yaml"
    listing.write_text("school: school.duckdb\nstudents: students.parquet\n"
                       "folder: files\nglob: files/*.parquet\n")
    before = sha256s(tmp_path)
    srv = start_server(listing, ["--no-model", "--timeout", "1"], repo_root)
    try:
        status, body = srv.call("GET", "/v1/databases")
        assert status == 200 and {d["name"]: d["engine"] for d in body["databases"]} == {
            "school": "duckdb", "students": "duckdb", "folder": "duckdb", "glob": "duckdb"}
        status, schema = srv.call("GET", "/v1/databases/folder/schema")
        assert status == 200 and "grades" in [t["name"] for t in schema["tables"]]
        status, schema = srv.call("GET", "/v1/databases/glob/schema")
        assert status == 200 and "grades" not in [t["name"] for t in schema["tables"]]
        status, schema = srv.call("GET", "/v1/databases/students/schema")
        assert status == 200 and [t["name"] for t in schema["tables"]] == ["students"]
        sql = "SELECT name FROM students WHERE year = 4 ORDER BY name LIMIT 3"
        for db in ("school", "students", "folder", "glob"):
            status, a = srv.post("/v1/sql", {"db": db, "sql": sql})
            assert status == 200 and a["error_kind"] is None and len(a["rows"]) == 3, a
        status, a = srv.post("/v1/sql", {"db": "school", "sql": "DELETE FROM students"})
        assert a["error_kind"] == "not_read_only" and not a["executed"], a
        status, a = srv.post("/v1/sql", {"db": "school", "sql": RUNAWAY})
        assert a["error_kind"] == "timeout", a
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)
    before.pop("serve-" + str(srv.port) + ".log", None)
    after = sha256s(tmp_path)
    after.pop("serve-" + str(srv.port) + ".log", None)
    assert after == before


def test_a_question_is_answered_over_parquet_by_the_model(files, tiny_adapter, repo_root, capsys):
    """The tiny adapter's SQL, whatever it is, goes the guarded way: exit status as the
    guards alone say (tests/conftest.py's ask_exit_status)."""
    from tests.conftest import asked_sql
    from text2sql.cli import main

    code = main(["ask", "--db", str(files), "--adapter", str(tiny_adapter), "--params",
                 str(repo_root / "params.yaml"), "--dialect", "postgres",
                 "How many students are there?"])
    out = capsys.readouterr().out
    assert "tables:" in out
    assert code == ask_exit_status(open_database(files), asked_sql(out))
