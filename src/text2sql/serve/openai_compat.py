"""The OpenAI-compatible face: ``/v1/models`` lists the databases as models and
``/v1/chat/completions`` answers the last user message as a question, whole or (``stream:
true``) as server-sent events of ``chat.completion.chunk`` objects, as OpenAI sends them.

A stream opens with the role, then the content (the SQL, then the result table, a line at a
time), a last chunk with ``finish_reason`` (and the full answer under ``text2sql``), the
usage when ``stream_options.include_usage`` asks for it, and ``data: [DONE]``. What can be
refused is refused before the stream opens, with the status an unstreamed request gets; a
failure after that is an ``error`` event, as OpenAI's.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from text2sql.serve.errors import BadRequest, error_body, failure, plain
from text2sql.serve.schemas import MAX_QUESTION_CHARS, ChatRequest, SqlRequest

if TYPE_CHECKING:
    from text2sql.serve.answers import Answerer

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering


def openai_routes(answerer: Answerer) -> Any:
    """An ``APIRouter`` with OpenAI's routes, answered by ``answerer``."""
    from fastapi import APIRouter
    from fastapi.responses import StreamingResponse

    router = APIRouter()

    @router.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        """The databases, as OpenAI-style models (``model`` picks the database)."""
        return {"object": "list", "data": [model_card(name) for name in answerer.catalog.names()]}

    @router.get("/v1/models/{model}", tags=["openai"])
    async def model(model: str) -> dict[str, Any]:
        """One database as a model (404 unless it is served)."""
        return model_card(answerer.catalog.locate(model.removeprefix("text2sql/")).name)

    @router.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat(req: ChatRequest) -> Any:
        """OpenAI-compatible: the last user message is the question; the database is the
        ``db`` field, else ``model`` (``school`` or ``text2sql/school``). The reply's content
        is the SQL and the result as a Markdown table; ``text2sql`` holds the full answer;
        ``usage`` counts the prompt's tokens and the generated ones. ``stream: true``: as
        server-sent events of ``chat.completion.chunk`` objects, ending ``data: [DONE]``."""
        req_sql = sql_request(req)
        reply = {"id": f"chatcmpl-text2sql-{time.time_ns()}", "created": int(time.time()),
                 "model": f"text2sql/{req_sql.db}"}
        if req.stream:
            answerer.catalog.locate(req_sql.db)  # refused before the stream opens: 404,
            answerer.model()  # 503
            answerer.check_capacity()  # 429
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                chunks(answerer, req_sql, reply, include_usage=include_usage),
                media_type="text/event-stream", headers=STREAM_HEADERS)
        body = await answerer.answer(req_sql)
        return {**reply, "object": "chat.completion",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": markdown(body)}}],
                "usage": body["usage"], "text2sql": body}

    return router


def model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "text2sql"}


def sql_request(req: ChatRequest) -> SqlRequest:
    """The ``/v1/sql`` request a chat request asks: its database and last user message."""
    db = req.db or (req.model or "").removeprefix("text2sql/")
    if not db:
        raise BadRequest("name the database: a 'db' field, or 'model': '<db>'", "model")
    users = [m for m in req.messages if m.role == "user"]
    question = message_text(users[-1].content) if users else ""
    if not question.strip():
        raise BadRequest("no question: the last 'user' message must hold text", "messages")
    try:
        return SqlRequest(db=db, question=question[:MAX_QUESTION_CHARS])
    except ValidationError as e:
        raise BadRequest("; ".join(plain(err) for err in e.errors())) from None


async def chunks(answerer: Answerer, req: SqlRequest, reply: dict[str, Any], *,
                 include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of one streamed answer (module docstring)."""
    base = {**reply, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None, **more: Any) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return event({**base, "choices": [choice], **extra, **more})

    yield chunk({"role": "assistant", "content": ""})
    try:
        body = await answerer.answer(req)
    except Exception as e:  # noqa: BLE001 - the stream is open: the error is an event
        status, message, code = failure(e)
        yield event(error_body("/v1/chat/completions", status, message, code=code)[1])
        yield "data: [DONE]\n\n"
        return
    for line in markdown(body).splitlines(keepends=True):
        yield chunk({"content": line})
    yield chunk({}, "stop", text2sql=body)
    if include_usage:
        yield event({**base, "choices": [], "usage": body["usage"]})
    yield "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def message_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of an OpenAI message content (a string, or a list of typed parts)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def markdown(body: dict[str, Any], shown_rows: int = 20) -> str:
    """An answer as chat text: the SQL, then the result table or what went wrong."""
    from tabulate import tabulate

    text = f"```sql\n{body['sql']}\n```"
    if body.get("error_kind"):
        return f"{text}\n\n{body['error_kind']}: {body['error']}"
    rows = body["rows"]
    table = tabulate(rows[:shown_rows], headers=body["columns"], tablefmt="github",
                     disable_numparse=True)
    more = f"\n\n({len(rows)} rows, {shown_rows} shown)" if len(rows) > shown_rows else ""
    return f"{text}\n\n{table}{more}"
