"""``text2sql serve`` for real: the command started on 127.0.0.1, asked over HTTP, and its
page driven in headless Chromium.

    uv run pytest tests/test_serve.py -q

The server serves a copy of the sample databases with the tiny adapter trained in the
test session; every database's sha256 is checked unchanged at the end.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TIMEOUT_S = 1.0
MAX_ROWS = 50
MAX_BODY_KB = 16
SAME = ("sql", "dialect", "dialect_sql", "columns", "rows", "truncated", "error_kind", "error",
        "executed")  # what an answer holds of its SQL, whoever wrote it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.sqlite"))}


class Server:
    """A running ``text2sql serve`` and a small HTTP client for it."""

    def __init__(self, port: int, proc: subprocess.Popen, databases: Path):
        self.port, self.proc, self.databases = port, proc, databases
        self.url = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode()
        conn.close()
        try:
            return response.status, json.loads(text)
        except json.JSONDecodeError:
            return response.status, {"text": text}

    def post(self, path: str, body: object) -> tuple[int, dict]:
        return self.call("POST", path, body, headers={"Content-Type": "application/json"})


def start_server(databases: Path, options: list[str], cwd: Path) -> Server:
    """``text2sql serve`` on a free port over ``databases``, once /healthz answers."""
    port = free_port()
    log = databases.parent / f"serve-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "text2sql.cli", "serve", "--databases", str(databases),
         "--port", str(port), "--log-level", "warning", *options],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd)
    srv = Server(port, proc, databases)
    deadline = time.monotonic() + 180
    while True:
        try:
            if srv.call("GET", "/healthz")[0] == 200:
                return srv
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"text2sql serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_adapter, sample_dir, repo_root):
    databases = tmp_path_factory.mktemp("serve") / "database"
    shutil.copytree(sample_dir / "database", databases)
    before = sha256s(databases)
    srv = start_server(databases, [
        "--adapter", str(tiny_adapter), "--params", str(repo_root / "params.yaml"),
        "--timeout", str(TIMEOUT_S), "--max-rows", str(MAX_ROWS), "--max-body-kb",
        str(MAX_BODY_KB), "--sql-workers", "3"], repo_root)
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
    assert sha256s(databases) == before, "a served database changed"


def rows_of(db: Path, sql: str) -> list[list]:
    with sqlite3.connect(db) as conn:
        return [list(r) for r in conn.execute(sql)]


# --- without a server ---------------------------------------------------------------------

def test_the_catalog_serves_listed_names_only(tmp_path):
    from text2sql.serve.catalog import Catalog, UnknownDatabase

    folder = tmp_path / "dbs"
    (folder / "spider").mkdir(parents=True)
    (folder / "empty").mkdir()
    for path in (folder / "spider" / "spider.sqlite", folder / "flat.sqlite",
                 tmp_path / "outside.sqlite"):
        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    (folder / "notes.txt").write_text("not a database")
    catalog = Catalog(folder)
    assert sorted(catalog.names()) == ["flat", "spider"]
    assert catalog.locate("spider").path == folder / "spider" / "spider.sqlite"
    for name in ("../outside", "..", "spider/spider", "/etc/passwd", "notes", "empty", "",
                 "outside", "flat.sqlite"):
        with pytest.raises(UnknownDatabase):
            catalog.locate(name)


def test_serve_refuses_to_start_without_an_adapter(tmp_path, capsys):
    from text2sql.cli import main

    assert main(["serve", "--adapter", str(tmp_path), "--databases", str(tmp_path)]) == 2
    assert "no trained adapter" in capsys.readouterr().err
    assert main(["serve", "--no-model", "--databases", str(tmp_path / "nope")]) == 2
    assert "no such folder of SQLite databases (--databases)" in capsys.readouterr().err
    assert main(["serve", "--no-model", "--timeout", "0"]) == 2


def test_without_a_model_and_over_capacity(tmp_path, sample_dir, repo_root):
    """--no-model runs clients' SQL only; past --max-pending requests in flight: 429."""
    databases = tmp_path / "database"
    shutil.copytree(sample_dir / "database", databases)
    srv = start_server(databases, ["--no-model", "--max-pending", "1", "--timeout", "2"],
                       repo_root)
    try:
        status, body = srv.post("/v1/sql", {"db": "school", "question": "How many?"})
        assert status == 503 and "--no-model" in body["error"]["message"]
        runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " \
                  "SELECT count(*) FROM c"
        slow: dict = {}
        thread = threading.Thread(target=lambda: slow.update(
            answer=srv.post("/v1/sql", {"db": "school", "sql": runaway})[1]))
        thread.start()
        time.sleep(0.5)
        status, body = srv.post("/v1/sql", {"db": "school", "sql": "SELECT 1"})
        thread.join()
        assert status == 429 and "--max-pending 1" in body["error"]["message"], body
        assert body["error"]["type"] == "rate_limit_error"
        assert slow["answer"]["error_kind"] == "timeout"
        assert srv.post("/v1/sql", {"db": "school", "sql": "SELECT 1"})[1]["rows"] == [[1]]
    finally:
        srv.proc.terminate()
        srv.proc.wait(timeout=30)


# --- the API ---------------------------------------------------------------------------

def test_health_databases_and_schema(server):
    status, health = server.call("GET", "/healthz")
    assert status == 200 and health["status"] == "ok" and health["model"]
    status, listing = server.call("GET", "/v1/databases")
    assert status == 200
    assert [d["name"] for d in listing["databases"]] == ["clinic", "library", "school", "shop"]
    status, schema = server.call("GET", "/v1/databases/school/schema")
    assert status == 200
    tables = {t["name"]: [c["name"] for c in t["columns"]] for t in schema["tables"]}
    in_file = [r[0] for r in rows_of(server.databases / "school" / "school.sqlite",
                                     "SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert sorted(tables) == sorted(in_file)
    assert "name" in tables["students"]


def test_given_sql_runs_read_only_with_the_exact_rows_and_a_translation(server):
    sql = "SELECT name, year FROM students WHERE year >= 3 ORDER BY student_id"
    status, a = server.post("/v1/sql", {"db": "school", "sql": sql, "dialect": "postgres"})
    assert status == 200, a
    assert a["error_kind"] is None and a["executed"]
    assert a["columns"] == ["name", "year"]
    assert a["rows"] == rows_of(server.databases / "school" / "school.sqlite", sql)
    assert a["dialect_sql"].startswith("SELECT name, year FROM students")
    assert set(a) >= {"sql", "dialect_sql", "columns", "rows", "truncated", "error_kind", "error",
                      "timings"}


def test_a_question_is_answered_by_the_model(server):
    status, a = server.post("/v1/sql", {"db": "school", "question": "How many students are there?"})
    assert status == 200, a
    assert a["source"] == "model" and isinstance(a["sql"], str)
    assert a["tables"] and a["timings"]["generate_s"] > 0
    # the model's SQL, whatever it is, gets the answer that SQL sent by a client gets
    status, given = server.post("/v1/sql", {"db": "school", "sql": a["sql"]})
    assert status == 200 and {k: a[k] for k in SAME} == {k: given[k] for k in SAME}, (a, given)


def test_sampling_votes(server):
    status, a = server.post("/v1/sql", {"db": "school", "question": "List the courses",
                                        "num_samples": 3, "execute": False})
    assert status == 200, a
    assert a["vote"]["samples"] == 3


@pytest.mark.parametrize("sql", ["DELETE FROM students", "DROP TABLE students",
                                 "SELECT 1; DELETE FROM students",
                                 "ATTACH DATABASE '/tmp/x.sqlite' AS x",
                                 "WITH x AS (SELECT 1) UPDATE students SET name = 'x'"])
def test_writes_are_refused(server, sql):
    status, a = server.post("/v1/sql", {"db": "school", "sql": sql})
    assert status == 200
    assert a["error_kind"] == "not_read_only" and a["rows"] == [], a


def test_errors_come_by_kind(server):
    for sql, kind in (("SELECT nope FROM students", "unknown_column"),
                      ("SELECT * FROM nope", "unknown_table"),
                      ("SELECT * FROM students WHERE", "parse_error")):
        status, a = server.post("/v1/sql", {"db": "school", "sql": sql})
        assert (status, a["error_kind"]) == (200, kind), a


def test_a_runaway_query_times_out_without_holding_up_others(server):
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    slow: dict = {}
    thread = threading.Thread(target=lambda: slow.update(
        zip(("status", "answer"), server.post("/v1/sql", {"db": "school", "sql": runaway}))))
    t0 = time.monotonic()
    thread.start()
    time.sleep(0.2)
    status, quick = server.post("/v1/sql", {"db": "school", "sql": "SELECT count(*) FROM students"})
    quick_s = time.monotonic() - t0
    thread.join()
    assert status == 200 and quick["rows"] and quick_s < TIMEOUT_S, (quick_s, quick)
    assert slow["answer"]["error_kind"] == "timeout"


def test_a_huge_result_is_truncated(server):
    status, a = server.post("/v1/sql", {"db": "school",
                                        "sql": "SELECT * FROM students, courses, teachers"})
    assert status == 200
    assert a["truncated"] and len(a["rows"]) == MAX_ROWS
    status, a = server.post("/v1/sql", {"db": "school", "max_rows": 3,
                                        "sql": "SELECT * FROM students"})
    assert a["truncated"] and len(a["rows"]) == 3


def test_openai_chat_completions(server):
    status, c = server.post("/v1/chat/completions", {
        "model": "school", "temperature": 0,
        "messages": [{"role": "system", "content": "You write SQL."},
                     {"role": "user", "content": "How many teachers are there?"}]})
    assert status == 200, c
    assert c["object"] == "chat.completion" and c["model"] == "text2sql/school"
    content = c["choices"][0]["message"]["content"]
    assert content.startswith("```sql\n") and c["text2sql"]["sql"] in content
    status, c = server.post("/v1/chat/completions", {
        "model": "gpt-4", "db": "shop",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Count the orders"}]}]})
    assert status == 200 and c["text2sql"]["db"] == "shop"
    status, models = server.call("GET", "/v1/models")
    assert [m["id"] for m in models["data"]] == ["clinic", "library", "school", "shop"]


def test_docs_and_page_are_served(server):
    assert server.call("GET", "/docs")[0] == 200
    status, spec = server.call("GET", "/openapi.json")
    assert {"/v1/sql", "/v1/databases", "/v1/databases/{db}/schema", "/v1/chat/completions",
            "/healthz"} <= set(spec["paths"])
    status, page = server.call("GET", "/")
    assert status == 200 and "<select id=\"db\"" in page["text"]


# --- bad input: 4xx with a message, never a 5xx ------------------------------------------
# Under /v1 an error is OpenAI's object, and what FastAPI calls a 422 is OpenAI's 400.

@pytest.mark.parametrize("raw, status, words", [
    (b'{"db": "school",', 400, "malformed JSON"),
    (b"not json at all", 400, "malformed JSON"),
    (b'["school"]', 400, "JSON object"),
    (b'{"question": "How many?"}', 400, "missing field 'db'"),
    (b'{"db": "school"}', 400, "give a 'question'"),
    (b'{"db": "school", "question": "x", "colour": 1}', 400, "unknown field 'colour'"),
    (b'{"db": "school", "question": "x", "num_samples": 0}', 400, "num_samples"),
    (b'{"db": "school", "sql": "SELECT 1", "dialect": "klingon"}', 400, "postgres"),
    (b'{"db": "nope", "sql": "SELECT 1"}', 404, "unknown database"),
    (b'{"db": "../school/school", "sql": "SELECT 1"}', 404, "unknown database"),
    (b'{"db": "/etc/passwd", "sql": "SELECT 1"}', 404, "unknown database"),
    (b'{"db": "school/school.sqlite", "sql": "SELECT 1"}', 404, "unknown database"),
    (b'{"db": "..", "sql": "SELECT 1"}', 404, "unknown database"),
])
def test_bad_requests_get_a_clear_4xx(server, raw, status, words):
    # No Content-Type, as `curl -d` sends a form type: the body is read as JSON all the same.
    got, body = server.call("POST", "/v1/sql", raw=raw)
    assert got == status and words in body["error"]["message"], body
    assert body["error"]["type"] == "invalid_request_error"


def test_an_oversized_body_is_413(server):
    big = json.dumps({"db": "school", "sql": "SELECT '" + "x" * (MAX_BODY_KB * 1024) + "'"})
    status, body = server.call("POST", "/v1/sql", raw=big.encode())
    assert status == 413 and "too large" in body["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/databases/nope/schema", "/v1/databases/../schema",
                                  "/v1/databases/..%2F..%2Fetc%2Fpasswd/schema",
                                  "/v1/databases/school.sqlite/schema", "/v1/nothing"])
def test_unknown_databases_and_paths_are_404(server, path):
    status, body = server.call("GET", path)
    assert status == 404 and body["error"]["message"], body
    status, body = server.call("GET", "/nothing")  # outside /v1: the plain shape
    assert status == 404 and body == {"error": "no such page or endpoint (see /docs)"}


def test_chat_bad_requests(server):
    assert server.post("/v1/chat/completions", {"model": "school",
                                                "messages": [{"role": "system", "content": "x"}]}
                       )[0] == 400
    assert server.post("/v1/chat/completions", {"model": "nope",
                                                "messages": [{"role": "user", "content": "x"}]}
                       )[0] == 404
    assert server.post("/v1/chat/completions", {"messages": []})[0] == 400


# --- the page, in headless Chromium --------------------------------------------------------

@pytest.mark.browser
def test_the_page_asks_the_school_database_and_shows_the_table(server, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (uv sync)")
    expected_sql = "SELECT name, city FROM students WHERE year = 4 ORDER BY name"
    expected = rows_of(server.databases / "school" / "school.sqlite", expected_sql)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.goto(server.url + "/")
        page.wait_for_selector("#db option[value=school], #db option:text-is('school')",
                               state="attached")
        page.select_option("#db", "school")
        page.wait_for_function("document.getElementById('tables').textContent.includes('students')")
        # Ask: the tiny model writes poor SQL, so its answer is a table or an error by kind.
        page.fill("#question", "Which students are in year 4?")
        page.click("#go")
        page.wait_for_function("!document.getElementById('answer').hidden && "
                               "!document.getElementById('go').disabled", timeout=120_000)
        assert page.inner_text("#sql").strip()
        shown = page.locator("#result tbody tr").count() or page.inner_text("#error")
        assert shown, "neither a table nor an error after asking"
        # Edit the SQL and run it: the page shows exactly the database's rows.
        assert page.is_hidden("#editor")
        page.click("#edit")
        assert page.is_visible("#edit-sql")
        page.fill("#edit-sql", expected_sql)
        page.click("#run")
        page.wait_for_function(
            f"document.querySelectorAll('#result tbody tr').length === {len(expected)}")
        headers = page.locator("#result th").all_inner_texts()
        cells = [page.locator("#result tbody tr").nth(i).locator("td").all_inner_texts()
                 for i in range(len(expected))]
        assert headers == ["name", "city"]
        assert cells == [[str(v) for v in row] for row in expected]
        assert page.locator(".kw").first.inner_text() == "SELECT"  # highlighted
        # A refused write is shown in plain words, by kind.
        page.fill("#edit-sql", "DELETE FROM students")
        page.click("#run")
        page.wait_for_function("!document.getElementById('error').hidden")
        assert page.get_attribute("#error", "data-kind") == "not_read_only"
        assert "Nothing was executed" in page.inner_text("#error")
        # The dialect picker translates what is shown.
        page.fill("#edit-sql", "SELECT name FROM students LIMIT 2")
        page.click("#run")
        page.wait_for_function("document.querySelectorAll('#result tbody tr').length === 2")
        page.select_option("#dialect", "tsql")
        page.wait_for_function("document.getElementById('sql').textContent.includes('TOP')")
        screenshot = tmp_path / "serve_page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")
