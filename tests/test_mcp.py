"""``text2sql mcp`` for real, through the MCP SDK's own client: over stdio (the command
spawned as a subprocess, as an MCP host does) and over streamable HTTP (the server started on
127.0.0.1 behind an API key). Writes are refused, a runaway query ends at the timeout, a
request without the key gets 401, and every database file is unchanged afterwards."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests.conftest import REPO, SCHOOL, ask_exit_status, duckdb_copy
from tests.test_duckdb import sha256s
from tests.test_serve import free_port

TIMEOUT_S = 1.0
KEY = "k" * 8 + "-mcp-test-key-0123456789"
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
TOOLS = {"list_databases", "describe_schema", "ask_question", "run_sql"}


def environment() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(sys.path), "PATH": os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def dbs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mcp")
    (folder / "school.sqlite").write_bytes(SCHOOL.read_bytes())
    duckdb_copy(SCHOOL, folder / "campus.duckdb")
    return folder


def mcp_args(dbs: Path) -> list[str]:
    return ["-m", "text2sql.cli", "mcp", "--db", f"school={dbs / 'school.sqlite'}",
            "--db", str(dbs / "campus.duckdb"), "--timeout", str(TIMEOUT_S), "--max-rows", "50"]


def payload(result) -> dict:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def exercise(client, *, model: bool = False) -> dict[str, object]:
    """The tools as a host calls them; what each gave, for the test to check."""
    out: dict[str, object] = {}
    out["tools"] = {t.name for t in (await client.list_tools()).tools}
    out["databases"] = payload(await client.call_tool("list_databases", {}))["databases"]
    out["schema"] = payload(await client.call_tool("describe_schema", {"db": "campus"}))
    sql = "SELECT name, year FROM students WHERE year = 4 ORDER BY name LIMIT 3"
    out["rows"] = {db: payload(await client.call_tool("run_sql", {"db": db, "sql": sql}))
                   for db in ("school", "campus")}
    out["write"] = payload(await client.call_tool("run_sql", {"db": "campus",
                                                              "sql": "DELETE FROM students"}))
    out["file"] = payload(await client.call_tool(
        "run_sql", {"db": "campus", "sql": "SELECT * FROM read_csv('/etc/passwd')"}))
    start = time.monotonic()
    out["runaway"] = {db: payload(await client.call_tool("run_sql", {"db": db, "sql": RUNAWAY}))
                      for db in ("school", "campus")}
    out["runaway_s"] = time.monotonic() - start
    out["unknown"] = await client.call_tool("describe_schema", {"db": "../etc"})
    out["question"] = await client.call_tool(
        "ask_question", {"db": "campus", "question": "How many students are there?"})
    return out


def check(out: dict[str, object]) -> None:
    assert out["tools"] == TOOLS
    assert out["databases"] == [{"name": "campus", "engine": "duckdb"},
                                {"name": "school", "engine": "sqlite"}]
    schema = out["schema"]
    assert {t["name"] for t in schema["tables"]} >= {"students", "courses"}
    assert schema["engine"] == "duckdb" and schema["foreign_keys"]
    rows = out["rows"]
    assert rows["school"]["rows"] == rows["campus"]["rows"] and len(rows["school"]["rows"]) == 3
    assert rows["campus"]["dialect_sql"].startswith("SELECT name, year FROM students")
    for refused in (out["write"], out["file"]):
        assert refused["error_kind"] in ("not_read_only", "parse_error"), refused
        assert not refused["executed"] and refused["rows"] == []
    for answer in out["runaway"].values():
        assert answer["error_kind"] == "timeout", answer
    assert out["runaway_s"] < 2 * (TIMEOUT_S + 2)
    assert out["unknown"].is_error and "unknown database" in out["unknown"].content[0].text


def test_over_stdio_with_the_sdk_client(dbs):
    from mcp import Client, StdioServerParameters

    before = sha256s(dbs)
    params = StdioServerParameters(command=sys.executable, args=[*mcp_args(dbs), "--no-model"],
                                   env=environment(), cwd=str(REPO))

    async def main() -> dict[str, object]:
        async with Client(params) as client:
            return await exercise(client)

    out = anyio.run(main)
    check(out)
    assert out["question"].is_error and "--no-model" in out["question"].content[0].text
    assert sha256s(dbs) == before


def start_http(dbs: Path, extra: list[str]) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = dbs.parent / f"mcp-{port}.log"
    proc = subprocess.Popen([sys.executable, *mcp_args(dbs), "--transport", "http", "--port",
                             str(port), *extra], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            cwd=REPO, env={**os.environ, **environment()})
    deadline = time.monotonic() + 120
    while True:
        try:
            status, _ = post(port, {}, key=None)
            return proc, port, log
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"text2sql mcp did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def post(port: int, body: object, key: str | None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    conn.request("POST", "/mcp", body=json.dumps(body).encode(), headers=headers)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def test_over_http_behind_the_api_key(dbs):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    before = sha256s(dbs)
    proc, port, log = start_http(dbs, ["--api-key", KEY, "--no-model"])
    try:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}
        for key in (None, "wrong-key-0123456789abcdef"):
            status, text = post(port, initialize, key)
            assert status == 401 and "Authorization: Bearer" in text, (status, text)

        async def main() -> dict[str, object]:
            headers = {"Authorization": f"Bearer {KEY}"}
            async with httpx2.AsyncClient(headers=headers, timeout=60) as http_client:
                transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp",
                                                   http_client=http_client)
                async with Client(transport) as client:
                    return await exercise(client)

        check(anyio.run(main))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert KEY not in log.read_text()
    assert sha256s(dbs) == before


def test_http_refuses_an_open_bind_without_a_key(dbs, capsys, monkeypatch):
    from text2sql.cli import main

    monkeypatch.delenv("TEXT2SQL_API_KEYS", raising=False)
    args = ["mcp", "--db", str(dbs / "school.sqlite"), "--no-model", "--transport", "http"]
    assert main([*args, "--host", "0.0.0.0"]) == 2
    assert "no API key is set" in capsys.readouterr().err
    assert main([*args, "--api-key", "short"]) == 2
    assert "short" not in capsys.readouterr().err
    assert main(["mcp", "--no-model"]) == 2
    assert "no databases" in capsys.readouterr().err


def test_ask_question_with_the_model_over_stdio(dbs, tiny_adapter):
    """The tiny adapter's SQL, whatever it is, went the guarded way: its outcome is what the
    guards alone give for that SQL (tests/conftest.py's ask_exit_status)."""
    from mcp import Client, StdioServerParameters

    from text2sql.ask.database import open_database

    params = StdioServerParameters(
        command=sys.executable, args=[*mcp_args(dbs), "--adapter", str(tiny_adapter),
                                      "--params", str(REPO / "params.yaml")],
        env=environment(), cwd=str(REPO))

    async def main():
        async with Client(params, read_timeout_seconds=600) as client:
            return payload(await client.call_tool(
                "ask_question", {"db": "campus", "question": "How many students are there?"}))

    answer = anyio.run(main)
    assert answer["source"] == "model" and answer["tables"]
    expected = ask_exit_status(open_database(dbs / "campus.duckdb"), answer["sql"])
    got = 3 if answer["refused"] else 1 if answer["error_kind"] else 0
    assert got == expected, answer
