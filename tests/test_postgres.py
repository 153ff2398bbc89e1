"""``ask`` and ``serve`` on a real PostgreSQL server: a throwaway cluster on 127.0.0.1 holding
the sample school database, asked as docs/postgresql.md's SELECT-only role and, for the attacks, as
the superuser (the worst case: only this project's guards stand in the way).

    uv run pytest tests/test_postgres.py -q

Skipped, with the reason, where PostgreSQL's binaries are not installed.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import SAMPLE, ask_exit_status, asked_sql
from tests.postgres_server import READER, READER_PASSWORD
from text2sql.ask.postgres import PostgresDatabase, WritableRole
from text2sql.cli import main
from text2sql.evaluation.compare import results_match
from text2sql.sql.postgres import beyond_reading, hide_password, masked

SCHOOL = SAMPLE / "database" / "school" / "school.sqlite"
WRONG_PASSWORD = "Wr0ng-pass-Q7"


def fingerprint(cluster) -> dict:
    """Every table's rows, the sessions and a setting: what an attack must leave as it was."""
    with cluster.admin("school") as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        rows = {t: conn.execute(f'SELECT md5(string_agg(x::text, \',\' ORDER BY x::text)) '
                                f'FROM "{t}" x').fetchone()[0] for t in tables}
        return {"tables": rows, "relations": conn.execute(
            "SELECT count(*) FROM pg_class").fetchone()[0], "large_objects": conn.execute(
            "SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]}


# --- without a server ---------------------------------------------------------------------

def test_passwords_are_masked():
    url = "postgresql://reader:p%40ss-W0rd@db.example:5433/shop?sslmode=require&password=other"
    assert masked(url) == ("postgresql://reader:***@db.example:5433/shop"
                           "?sslmode=require&password=***")
    assert masked("postgresql://reader@db/shop") == "postgresql://reader@db/shop"
    message = 'FATAL: password "p@ss-W0rd" or p%40ss-W0rd or other is wrong'
    assert hide_password(message, url) == 'FATAL: password "***" or *** or *** is wrong'
    assert "p@ss" not in repr(PostgresDatabase(url)) and "p@ss" not in str(PostgresDatabase(url))


@pytest.mark.parametrize("sql, why", [
    ("SELECT PG_TERMINATE_BACKEND(1)", "pg_terminate_backend()"),
    ('SELECT "pg_catalog"."set_config"(\'a\', \'b\', FALSE)', "set_config()"),
    ("SELECT NEXTVAL('s')", "nextval()"),
    ("SELECT * FROM t FOR UPDATE", "UPDATE inside"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "DELETE inside"),
    ("SELECT * INTO copy FROM t", "INTO inside"),
])
def test_what_acts_beyond_reading_is_named(sql, why):
    assert why in beyond_reading(sql)
    assert beyond_reading("SELECT 'pg_sleep(1); DELETE' AS note, count(*) FROM t") is None


# --- on the server ------------------------------------------------------------------------

def test_schema_comes_from_the_catalog(reader_url):
    from text2sql.sql.schema import schema_from_sqlite

    live, file = PostgresDatabase(reader_url).schema(), schema_from_sqlite(SCHOOL)
    assert live.db_id == "school"
    assert [(t.name, [c.name for c in t.columns], t.primary_key) for t in live.tables] == \
        [(t.name, [c.name for c in t.columns], t.primary_key) for t in file.tables]
    assert set(live.foreign_keys) == set(file.foreign_keys)
    assert live.table("grades").columns[1].type == "double precision"
    assert PostgresDatabase(reader_url, ["nosuchschema"]).schema().tables == []


def test_prompts_are_the_sqlite_ones(reader_url):
    from text2sql.ask.questions import prompt_row
    from text2sql.params import PrepareParams
    from text2sql.sql.schema import schema_from_sqlite

    settings = PrepareParams()
    question = "Which courses did Wren Falk take?"
    db = PostgresDatabase(reader_url)
    live = prompt_row(question, db, db.schema(), settings)
    file = prompt_row(question, SCHOOL, schema_from_sqlite(SCHOOL), settings)
    assert live["tables"] == file["tables"]
    assert "students.name = 'Wren Falk'" in live["prompt"][-1]["content"]  # a value hint
    assert live["db_path"] == masked(reader_url) and READER_PASSWORD not in json.dumps(live)
    with_rows = prompt_row(question, db, db.schema(), PrepareParams(sample_rows=2))
    assert "-- rows: (" in with_rows["prompt"][-1]["content"]


def test_other_schemas_and_mixed_case_names(cluster, reader_url, capsys):
    """--schemas picks the schemas; names the catalog spells in mixed case are quoted so."""
    with cluster.admin("school") as conn:
        conn.execute('CREATE SCHEMA crm; CREATE TABLE crm."Customers" ("CustomerId" int '
                     'PRIMARY KEY, "FullName" text); INSERT INTO crm."Customers" VALUES '
                     "(1, 'Ada Abara'), (2, 'Bruno Lind'); GRANT USAGE ON SCHEMA crm TO "
                     f"{READER}; GRANT SELECT ON ALL TABLES IN SCHEMA crm TO {READER}")
    try:
        assert PostgresDatabase(reader_url, ["crm"]).schema().table_names == ["Customers"]
        assert len(PostgresDatabase(reader_url, ["crm", "public"]).schema().tables) == 6
        code = main(["ask", "--db", reader_url, "--schemas", "crm", "--sql",
                     "SELECT fullname FROM customers WHERE customerid = 2"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert 'SELECT "FullName" FROM "Customers" WHERE "CustomerId" = 2' in out
        assert "Bruno Lind" in out
    finally:
        with cluster.admin("school") as conn:
            conn.execute("DROP SCHEMA crm CASCADE")


def test_pooled_sessions_are_rolled_back(reader_url):
    """What a query changes in its session (settings, the search path) dies with its
    transaction: the next query on the same pooled connection does not see it."""
    db = PostgresDatabase(reader_url, pool_size=1)
    try:
        changed = db.execute("SELECT set_config('search_path', 'pg_catalog', false)",
                             timeout_s=2, max_rows=1)
        assert changed.ok
        assert db.run("SELECT count(*) FROM students").rows == [(40,)]
    finally:
        db.close()


def test_the_gold_queries_give_the_sqlite_answers(reader_url):
    """Every school query of the sample dev set, translated: the rows SQLite gives."""
    import sqlite3

    queries = [e["query"] for e in json.loads((SAMPLE / "dev.json").read_text())
               if e["db_id"] == "school"]
    db = PostgresDatabase(reader_url)
    with sqlite3.connect(SCHOOL) as conn:
        for sql in queries:
            result = db.run(sql)
            assert result.ok, (sql, result.message)
            assert results_match(conn.execute(sql).fetchall(), result.rows), sql


def test_ask_sql_on_postgres(reader_url, capsys):
    code = main(["ask", "--db", reader_url, "--sql",
                 "SELECT name, substr(city, 1, 3) AS c FROM students WHERE year = 3 "
                 "ORDER BY name LIMIT 2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[2] == "SQL (postgres):"
    assert "SUBSTRING(city FROM 1 FOR 3)" in lines[3]  # what ran: SQLite's NULL order kept too
    assert lines[4].split() == ["name", "c"] and lines[-1].startswith("(2 rows;")
    assert READER_PASSWORD not in out + err


def test_ask_with_the_adapter_on_postgres(reader_url, tiny_adapter, cluster, capsys):
    before = fingerprint(cluster)
    code = main(["ask", "--db", reader_url, "--adapter", str(tiny_adapter),
                 "--max-new-tokens", "48", "--params", "/nonexistent.yaml",
                 "How many students live in Glenrock?"])
    out, err = capsys.readouterr()
    assert "tables: " in out and "students" in out.splitlines()[0]
    assert "SQL (generated in" in out
    # Which SQL the poorly trained model writes is its own; what ask does with it is not.
    sql = asked_sql(out)
    assert code == ask_exit_status(PostgresDatabase(reader_url), sql), (sql, out, err)
    if code == 0:
        assert "SQL (postgres):" in out and "row" in out.splitlines()[-1]
    assert READER_PASSWORD not in out + err
    assert fingerprint(cluster) == before


ATTACKS = [
    "INSERT INTO students VALUES (99, 'Eve', 1, 'Nowhere')",
    "UPDATE students SET city = 'Nowhere'",
    "DELETE FROM enrollments",
    "DROP TABLE grades",
    "CREATE TABLE loot (x INTEGER)",
    "ALTER TABLE students ADD COLUMN x INTEGER",
    "COPY students TO '/tmp/text2sql-loot.csv'",
    "SELECT 1; DROP TABLE grades",
    "WITH x AS (DELETE FROM enrollments RETURNING *) SELECT count(*) FROM x",
    "SELECT * FROM students FOR UPDATE",
    "SELECT * INTO loot FROM students",
    "SELECT pg_sleep(30)",
    "SELECT nextval('loot_seq')",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
    'SELECT "pg_cancel_backend"(1)',
    "SELECT pg_catalog.pg_reload_conf()",
    "SELECT pg_advisory_lock(1)",
    "SELECT lo_import('/etc/passwd')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT query_to_xml('DELETE FROM enrollments', true, true, '')",
]


def test_writes_ddl_copy_and_side_effects_are_refused(cluster, superuser_url, capsys):
    """As the superuser (the worst case, allowed on purpose): each is refused before it runs,
    or fails as not_read_only, and the database, its sessions and settings are as they were."""
    before = fingerprint(cluster)
    for sql in ATTACKS:
        code = main(["ask", "--db", superuser_url, "--allow-writable-role", "--timeout", "2",
                     "--sql", sql])
        err = capsys.readouterr().err
        assert code == 3 and "refused" in err, (sql, code, err)
    db = PostgresDatabase(superuser_url, allow_writable_role=True)
    for sql in ATTACKS:
        assert db.run(sql, timeout_s=2).error == "not_read_only", sql
    # Past the text checks, the server-side cursor takes one query only, and the read-only
    # transaction stops what writes.
    for pg_sql in ("DELETE FROM enrollments", "CREATE TABLE loot (x int)",
                   "SELECT 1; DROP TABLE grades"):
        assert db.execute(pg_sql, timeout_s=2, max_rows=10).error == "parse_error", pg_sql
    for pg_sql, kind in (("SELECT * FROM students FOR UPDATE", "not_read_only"),  # the transaction
                         ("WITH x AS (DELETE FROM enrollments RETURNING *) SELECT 1",
                          "execution_error")):  # the server-side cursor
        assert db.execute(pg_sql, timeout_s=2, max_rows=10).error == kind, pg_sql
    # What a read-only transaction lets through is rolled back: no large object is left.
    assert db.execute("SELECT lo_create(0)", timeout_s=2, max_rows=10).ok
    assert fingerprint(cluster) == before
    assert not os.path.exists("/tmp/text2sql-loot.csv")


def test_a_superuser_is_refused_with_the_sql_of_a_reader(superuser_url, capsys):
    code = main(["ask", "--db", superuser_url, "--sql", "SELECT count(*) FROM students"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "role 'postgres' can change database 'school' (superuser" in err
    for words in ("CREATE ROLE text2sql_reader LOGIN", "GRANT CONNECT ON DATABASE school",
                  "GRANT SELECT ON ALL TABLES IN SCHEMA public TO text2sql_reader",
                  "default_transaction_read_only = on", "--allow-writable-role"):
        assert words in err, words
    with pytest.raises(WritableRole, match="superuser"):
        PostgresDatabase(superuser_url).schema()
    # allowed explicitly: it runs, with a warning that says why it should not
    code = main(["ask", "--db", superuser_url, "--allow-writable-role", "--sql",
                 "SELECT count(*) FROM students"])
    out, err = capsys.readouterr()
    assert code == 0 and out.splitlines()[-2].strip() == "40"
    assert "warning" in err and "role 'postgres' can change the database (superuser" in err


def test_the_select_only_role_is_accepted(reader_url, capsys):
    db = PostgresDatabase(reader_url)
    db.connect().close()
    assert db.role_rights == []
    assert main(["ask", "--db", reader_url, "--sql", "SELECT count(*) FROM students"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_write_rights_short_of_a_superuser_are_found(cluster):
    """A role that may INSERT into one table, CREATE in a schema and write server files."""
    with cluster.admin("school") as conn:
        conn.execute("CREATE ROLE scribbler LOGIN PASSWORD 'Scribbler-pw-123'; "
                     "GRANT CONNECT ON DATABASE school TO scribbler; "
                     "GRANT USAGE, CREATE ON SCHEMA public TO scribbler; "
                     "GRANT SELECT ON ALL TABLES IN SCHEMA public TO scribbler; "
                     "GRANT INSERT, UPDATE ON students TO scribbler; "
                     "GRANT pg_write_server_files TO scribbler")
    try:
        db = PostgresDatabase(cluster.url("school", "scribbler", "Scribbler-pw-123"))
        with pytest.raises(WritableRole) as refused:
            db.schema()
        message = str(refused.value)
        assert "superuser" not in message.split("):")[0]
        for words in ("member of pg_write_server_files", "CREATE on schema public",
                      "INSERT/UPDATE on public.students"):
            assert words in message, (words, message)
        assert "Scribbler-pw-123" not in message
    finally:
        with cluster.admin("school") as conn:
            conn.execute("DROP OWNED BY scribbler; DROP ROLE scribbler")


def test_serve_refuses_a_writable_role_unless_allowed(superuser_url, reader_url, tmp_path,
                                                      capsys):
    from fastapi.testclient import TestClient

    from text2sql.serve.app import ServeSettings, create_app

    (tmp_path / "databases.yaml").write_text(f"school: '{superuser_url}'\n")
    assert main(["serve", "--no-model", "--databases", str(tmp_path / "databases.yaml")]) == 2
    err = capsys.readouterr().err
    assert "superuser" in err and "CREATE ROLE text2sql_reader" in err
    settings = ServeSettings(databases=tmp_path / "databases.yaml", adapter=None,
                             allow_writable_role=True)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/sql", json={"db": "school", "sql": "SELECT 1"}).json()
        assert body["rows"] == [[1]]
    assert "warning" in capsys.readouterr().err


def test_the_read_only_role_cannot_write_either(reader_url, cluster):
    db = PostgresDatabase(reader_url)
    result = db.execute("SELECT * FROM students FOR UPDATE", timeout_s=2, max_rows=10)
    assert result.error == "not_read_only" and "read-only transaction" in result.message
    import psycopg

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        with psycopg.connect(reader_url, autocommit=True) as conn:  # no read-only session
            conn.execute("DELETE FROM enrollments")


def test_a_runaway_query_is_stopped_by_statement_timeout(reader_url, capsys):
    runaway = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
               "SELECT count(*) FROM c")
    code = main(["ask", "--db", reader_url, "--timeout", "1", "--sql", runaway])
    err = capsys.readouterr().err
    assert code == 1 and "statement_timeout" in err and "[timeout]" in err
    result = PostgresDatabase(reader_url).run(runaway, timeout_s=0.5)
    assert result.error == "timeout" and result.seconds < 3


def test_errors_come_by_kind(reader_url):
    db = PostgresDatabase(reader_url)
    assert db.run("SELECT * FROM nope").error == "unknown_table"
    assert db.run("SELECT nme FROM students").error == "unknown_column"
    bad = db.run("SELECT * FROM (")
    assert bad.error == "parse_error" and "sqlglot cannot translate" in bad.message
    big = db.run("SELECT * FROM enrollments", max_rows=3)
    assert big.ok and big.truncated and len(big.rows) == 3
    assert db.run("SELECT * FROM enrollments", max_bytes=100).error == "too_large"


def test_connection_failures_say_where_and_what_to_check(cluster, capsys):
    wrong = cluster.url("school", READER, WRONG_PASSWORD)
    assert main(["ask", "--db", wrong, "--sql", "SELECT 1"]) == 2
    out, err = capsys.readouterr()
    assert f"cannot connect to PostgreSQL at 127.0.0.1, port {cluster.port}" in err
    assert "password authentication failed" in err and "pg_hba.conf" in err
    assert WRONG_PASSWORD not in out + err
    assert main(["ask", "--db", f"postgresql://{READER}:{WRONG_PASSWORD}@127.0.0.1:1/school",
                 "--sql", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1, port 1" in err and "Connection refused" in err
    assert WRONG_PASSWORD not in err


def test_libpq_environment_variables(cluster, monkeypatch, capsys):
    for key, value in {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": READER,
                       "PGPASSWORD": READER_PASSWORD, "PGDATABASE": "school"}.items():
        monkeypatch.setenv(key, value)
    assert main(["ask", "--db", "postgresql://", "--sql", "SELECT count(*) FROM students"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-2].strip() == "40" and READER_PASSWORD not in out + err


def lite_count(srv) -> list:
    return srv.post("/v1/sql", {"db": "school", "sql": "SELECT count(*) FROM grades"})[1]["rows"]


def test_serve_answers_on_postgres(cluster, reader_url, tmp_path, repo_root, monkeypatch):
    """``serve --databases databases.yaml``: a PostgreSQL database (password from the
    environment) beside a SQLite file, from a pool; never a password in its answers or log."""
    from tests.test_serve import start_server

    (tmp_path / "databases.yaml").write_text(
        f"school_pg: {{url: 'postgresql://{READER}:${{SCHOOL_PW}}@127.0.0.1:{cluster.port}/"
        f"school', schemas: [public]}}\nschool: {SCHOOL}\n"
        f"down: 'postgresql://{READER}:{WRONG_PASSWORD}@127.0.0.1:1/school'\n")
    monkeypatch.setenv("SCHOOL_PW", READER_PASSWORD)
    before = fingerprint(cluster)
    srv = start_server(tmp_path / "databases.yaml", ["--no-model", "--timeout", "1",
                                                     "--sql-workers", "2"], repo_root)
    try:
        status, listed = srv.call("GET", "/v1/databases")
        assert listed["databases"] == [{"name": "school_pg", "engine": "postgresql"},
                                       {"name": "school", "engine": "sqlite"},
                                       {"name": "down", "engine": "postgresql"}]
        status, down = srv.post("/v1/sql", {"db": "down", "sql": "SELECT 1"})
        assert status == 503 and "127.0.0.1, port 1" in down["error"]["message"], down
        assert WRONG_PASSWORD not in json.dumps(down)
        status, schema = srv.call("GET", "/v1/databases/school_pg/schema")
        assert status == 200 and [t["name"] for t in schema["tables"]][:2] == ["teachers",
                                                                             "courses"]
        sql = "SELECT title, credits FROM courses ORDER BY credits DESC, title LIMIT 2"
        pg = srv.post("/v1/sql", {"db": "school_pg", "sql": sql})[1]
        lite = srv.post("/v1/sql", {"db": "school", "sql": sql})[1]
        assert pg["rows"] == lite["rows"] and pg["columns"] == ["title", "credits"]
        assert pg["dialect"] == "postgres" and pg["dialect_sql"].startswith("SELECT title")
        for attack in ("DELETE FROM enrollments", "SELECT pg_terminate_backend(1)",
                       "SELECT * FROM students FOR UPDATE"):
            assert srv.post("/v1/sql", {"db": "school_pg", "sql": attack})[1]["error_kind"] \
                == "not_read_only", attack
        runaway = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                   "SELECT count(*) FROM c")
        assert srv.post("/v1/sql", {"db": "school_pg", "sql": runaway})[1]["error_kind"] \
            == "timeout"
        counts = [srv.post("/v1/sql", {"db": "school_pg", "sql": "SELECT count(*) FROM grades"})
                  [1]["rows"] for _ in range(3)]  # the pool's sessions, reused
        assert counts[0] == counts[1] == counts[2] == lite_count(srv)
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)
    log = (tmp_path / f"serve-{srv.port}.log").read_text()
    assert READER_PASSWORD not in log and WRONG_PASSWORD not in log
    assert READER_PASSWORD not in json.dumps(listed)
    assert fingerprint(cluster) == before


def test_serve_asks_the_model_on_postgres(cluster, reader_url, tiny_adapter, repo_root, tmp_path):
    """The model's road in serve (linking, prompt, generation, voting) on a PostgreSQL
    database; in this process (starting a server process with the model costs much more)."""
    from fastapi.testclient import TestClient

    from tests.test_serve import SAME
    from text2sql.serve.app import ServeSettings, create_app

    (tmp_path / "databases.yaml").write_text(f"school: '{reader_url}'\n")
    before = fingerprint(cluster)
    settings = ServeSettings(databases=tmp_path / "databases.yaml", adapter=tiny_adapter,
                             params=repo_root / "params.yaml", timeout_s=2.0, max_rows=50)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/sql", json={"db": "school",
                                            "question": "How many students live in Glenrock?"}).json()
        assert body["source"] == "model" and "students" in body["tables"]
        assert body["dialect"] == "postgres"
        # the model's SQL, whatever it is, gets the answer that SQL sent by a client gets
        given = client.post("/v1/sql", json={"db": "school", "sql": body["sql"]}).json()
        assert {k: body[k] for k in SAME} == {k: given[k] for k in SAME}, (body, given)
        voted = client.post("/v1/sql", json={"db": "school", "num_samples": 2,
                                             "question": "How many teachers are there?"}).json()
        assert voted["vote"]["samples"] == 2, voted
    assert fingerprint(cluster) == before
