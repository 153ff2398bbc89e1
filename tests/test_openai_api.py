"""``text2sql serve`` as an OpenAI-compatible server, behind an API key: the official ``openai``
client (sync, async, streaming) and plain HTTP (the server-sent events, the error objects,
the key check) against the command started on 127.0.0.1.

    uv run pytest tests/test_openai_api.py -q

One server runs the tiny adapter trained in the test session with ``--api-key``; another runs
without a model, its key from ``TEXT2SQL_API_KEYS``, with ``--cors-origin``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import httpx
import pytest

from tests.test_serve import start_server
from text2sql.runtime.keys import ENV_VAR, fingerprint

KEY = "test-key-0123456789-abcdef"
OTHER_KEY = "second-key-9876543210-zyx"
WRONG_KEY = "wrong-key-0123456789-abcdef"
ORIGIN = "https://chat.example"
QUESTION = "How many teachers are there?"
MESSAGES = [{"role": "system", "content": "You write SQL."},
            {"role": "user", "content": QUESTION}]


def stop(srv) -> str:
    """Stop the server; its log."""
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
    return (srv.databases.parent / f"serve-{srv.port}.log").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_adapter, sample_dir, repo_root):
    databases = tmp_path_factory.mktemp("openai") / "database"
    shutil.copytree(sample_dir / "database", databases)
    srv = start_server(databases, ["--adapter", str(tiny_adapter), "--params",
                                   str(repo_root / "params.yaml"), "--api-key", KEY,
                                   "--api-key", OTHER_KEY, "--max-body-kb", "16",
                                   "--log-level", "info"], repo_root)
    yield srv
    log = stop(srv)
    for key in (KEY, OTHER_KEY, WRONG_KEY):
        assert key not in log, "an API key in the server's log"
    assert fingerprint(KEY) in log and fingerprint(OTHER_KEY) in log


@pytest.fixture(scope="module")
def bare(tmp_path_factory, sample_dir, repo_root):
    """No model; the key from the environment; pages of ORIGIN may call it."""
    databases = tmp_path_factory.mktemp("bare") / "database"
    shutil.copytree(sample_dir / "database", databases)
    os.environ[ENV_VAR] = KEY
    try:
        srv = start_server(databases, ["--no-model", "--cors-origin", ORIGIN], repo_root)
    finally:
        del os.environ[ENV_VAR]
    yield srv
    stop(srv)


def client(srv, key: str = KEY):
    import openai

    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0, timeout=120)


def http(srv, key: str | None = KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=120)


def events(text: str) -> list:
    """The ``data:`` payloads of a server-sent event stream, JSON decoded ([DONE] kept)."""
    assert text.endswith("\n\n"), "an event stream ends with a blank line"
    found = []
    for block in text.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        payload = block.removeprefix("data: ")
        found.append(payload if payload == "[DONE]" else json.loads(payload))
    return found


def assert_openai_error(response: httpx.Response, status: int, kind: str,
                        code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == kind and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


# --- the openai client -------------------------------------------------------------------

def test_the_openai_client_asks_a_database(server, repo_root, tiny_adapter):
    """Sync client: the SQL and its table as content; usage counts the tokens of the prompt
    the model saw and of what it wrote."""
    from transformers import AutoTokenizer

    from text2sql.ask.questions import prepare_settings, prompt_row
    from text2sql.inference.hf import prompt_lengths, render_prompts
    from text2sql.params import InferParams, load_params
    from text2sql.serve.catalog import Catalog

    reply = client(server).chat.completions.create(model="school", messages=MESSAGES,
                                                   temperature=0)
    content = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.model == "text2sql/school"
    assert reply.choices[0].finish_reason == "stop" and content.startswith("```sql\n")
    body = reply.model_extra["text2sql"]
    assert body["sql"] in content
    db, schema = Catalog(server.databases).schema("school")
    row = prompt_row(QUESTION, db, schema, prepare_settings(repo_root / "params.yaml"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_adapter)
    [prompt_tokens] = prompt_lengths(tokenizer, render_prompts(tokenizer, [row["prompt"]]))
    infer: InferParams = load_params("infer", repo_root / "params.yaml")
    usage = reply.usage
    assert usage.prompt_tokens == prompt_tokens
    assert 0 < usage.completion_tokens <= infer.max_new_tokens * infer.num_samples
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert [m.id for m in client(server).models.list()] == ["clinic", "library", "school",
                                                             "shop"]
    assert client(server, OTHER_KEY).models.retrieve("school").id == "school"


def test_the_openai_client_streams(server):
    """Streamed: the role first, then content whose sum is the unstreamed reply's, a last
    chunk with finish_reason, the usage chunk asked for."""
    whole = client(server).chat.completions.create(model="school", messages=MESSAGES)
    stream = client(server).chat.completions.create(
        model="school", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([piece for piece in content if piece]) >= 2  # the SQL, then the table
    assert "".join(content) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    *_, last = chunks
    assert last.choices == [] and last.usage.total_tokens == whole.usage.total_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens > 0


def test_the_async_openai_client(server):
    import openai

    async def ask() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY,
                                      max_retries=0) as aclient:
            whole, stream = await asyncio.gather(
                aclient.chat.completions.create(model="text2sql/school", messages=MESSAGES),
                aclient.chat.completions.create(model="school", messages=MESSAGES,
                                                stream=True))
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return whole.choices[0].message.content, "".join(pieces)

    whole, streamed = asyncio.run(ask())
    assert whole.startswith("```sql\n") and streamed == whole


def test_the_openai_client_raises_openai_s_errors(server):
    import openai

    with pytest.raises(openai.AuthenticationError) as refused:
        client(server, WRONG_KEY).models.list()
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).chat.completions.create(model="nope", messages=MESSAGES)
    assert missing.value.code == "model_not_found" and "unknown database" in missing.value.message
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="nope", messages=MESSAGES, stream=True)
    with pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(model="school", messages=[])
    assert bad.value.param == "messages" and bad.value.type == "invalid_request_error"


# --- plain HTTP: the stream and the errors ------------------------------------------------

def test_the_event_stream_is_openai_s_format(server):
    with http(server) as h:
        response = h.post("/v1/chat/completions", json={
            "model": "school", "stream": True, "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    found = events(response.text)
    assert found[-1] == "[DONE]" and "[DONE]" not in found[:-1]
    chunks = found[:-1]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and "usage" not in chunk, chunk
        assert set(chunk) >= {"id", "created", "model", "choices"}
        [choice] = chunk["choices"]
        assert choice["index"] == 0 and set(choice) >= {"delta", "finish_reason"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    assert chunks[-1]["text2sql"]["sql"] in "".join(c["choices"][0]["delta"].get("content", "")
                                                    for c in chunks)


def test_errors_are_openai_s_object(server):
    with http(server) as h:
        assert_openai_error(h.post("/v1/chat/completions", content=b'{"model": "school",'),
                            400, "invalid_request_error", "invalid_json")
        error = assert_openai_error(h.post("/v1/sql", json={"question": "x"}), 400,
                                    "invalid_request_error")
        assert error["param"] == "db" and "missing field 'db'" in error["message"]
        error = assert_openai_error(h.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}]}), 400, "invalid_request_error")
        assert error["param"] == "model"
        assert_openai_error(h.post("/v1/sql", json={"db": "nope", "sql": "SELECT 1"}), 404,
                            "invalid_request_error", "model_not_found")
        assert_openai_error(h.get("/v1/nothing"), 404, "invalid_request_error", "not_found")
        assert_openai_error(h.post("/v1/sql", content=b"x" * 17 * 1024), 413,
                            "invalid_request_error", "request_too_large")
        assert_openai_error(h.post("/v1/chat/completions", json={
            "model": "school", "n": 2, "messages": MESSAGES}), 400, "invalid_request_error")
        # the routes outside /v1 keep their shape
        assert h.get("/nothing").json() == {"error": "no such page or endpoint (see /docs)"}


def test_a_key_is_needed_everywhere_but_the_health_check_and_the_page(server):
    with http(server, key=None) as h:
        for path in ("/v1/models", "/v1/databases", "/v1/databases/school/schema",
                     "/openapi.json", "/docs"):
            response = h.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert_openai_error(h.post("/v1/chat/completions", json={"model": "school",
                                                                 "messages": MESSAGES}),
                            401, "authentication_error", "invalid_api_key")
        assert_openai_error(h.post("/v1/chat/completions", json={
            "model": "school", "messages": MESSAGES, "stream": True}), 401,
            "authentication_error")
        for path in ("/healthz", "/", "/app.js", "/style.css", "/index.html"):
            assert h.get(path).status_code == 200, path
    for wrong in (f"Bearer {WRONG_KEY}", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", KEY):
        with httpx.Client(base_url=server.url, headers={"Authorization": wrong}) as h:
            response = h.get("/v1/models")
            error = assert_openai_error(response, 401, "authentication_error")
            assert KEY not in response.text and WRONG_KEY not in error["message"]
    with http(server, OTHER_KEY) as h:
        assert h.get("/v1/databases").status_code == 200
        assert h.get("/openapi.json").status_code == 200


def test_without_a_model_and_cors(bare):
    """The key from TEXT2SQL_API_KEYS; a question without a model is a 503 (streamed or
    not); CORS answers ORIGIN's pages only."""
    with http(bare) as h:
        assert h.post("/v1/sql", json={"db": "school", "sql": "SELECT 1"}).json()["rows"] == [[1]]
        for stream in (False, True):
            assert_openai_error(h.post("/v1/chat/completions", json={
                "model": "school", "messages": MESSAGES, "stream": stream}),
                503, "server_error", "no_model")
        allowed = h.get("/v1/databases", headers={"Origin": ORIGIN})
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        other = h.get("/v1/databases", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with http(bare, key=None) as h:  # a browser's preflight carries no key
        preflight = h.options("/v1/chat/completions", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        refused = h.get("/v1/databases", headers={"Origin": ORIGIN})
        assert refused.status_code == 401  # readable by ORIGIN's page, to ask for the key
        assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_unless_asked(server):
    with http(server) as h:
        response = h.get("/v1/databases", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


# --- starting -------------------------------------------------------------------------------

def test_an_open_bind_needs_a_key(tmp_path, capsys, monkeypatch):
    from text2sql.cli import main

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert main(["serve", "--no-model", "--host", "0.0.0.0", "--databases", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 answers other machines" in err and "--api-key" in err
    assert main(["serve", "--no-model", "--api-key", "short", "--databases",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "at least 16" in err and "short" not in err
    # with a key (or --allow-no-key) it goes on to the next check: the folder
    monkeypatch.setenv(ENV_VAR, KEY)
    missing = str(tmp_path / "nope")
    assert main(["serve", "--no-model", "--host", "0.0.0.0", "--databases", missing]) == 2
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.delenv(ENV_VAR)
    assert main(["serve", "--no-model", "--host", "0.0.0.0", "--allow-no-key",
                 "--databases", missing]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_error_bodies_by_path():
    from text2sql.serve.errors import error_body

    assert error_body("/v1/sql", 422, "missing field 'db'", param="db") == (400, {"error": {
        "message": "missing field 'db'", "type": "invalid_request_error", "param": "db",
        "code": None}})
    assert error_body("/v1/models", 429, "busy", code="server_busy")[1]["error"]["type"] == \
        "rate_limit_error"
    assert error_body("/v1x", 404, "gone") == (404, {"error": "gone"})
    assert error_body("/healthz", 500, "boom") == (500, {"error": "boom"})


# --- the page asks for the key ----------------------------------------------------------------

@pytest.mark.browser
def test_the_page_asks_for_the_key(server):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (uv sync)")
    answers = [WRONG_KEY, KEY]
    asked: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()

        def on_dialog(dialog) -> None:
            asked.append(dialog.message)
            dialog.accept(answers.pop(0))

        page.on("dialog", on_dialog)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('tables').textContent.length > 0")
        assert len(asked) == 2 and "needs an API key" in asked[0] and "refused" in asked[1]
        assert page.evaluate("sessionStorage.getItem('text2sql-api-key')") == KEY
        page.select_option("#db", "school")
        page.wait_for_function("document.getElementById('tables').textContent.includes('students')")
        assert len(asked) == 2  # kept for the tab: not asked again
        browser.close()
