"""The OpenAI-compatible face: ``/v1/models`` lists the databases as models and
``/v1/chat/completions`` answers the last user message as a question."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from text2sql.serve.errors import plain
from text2sql.serve.schemas import MAX_QUESTION_CHARS, ChatRequest, SqlRequest

if TYPE_CHECKING:
    from text2sql.serve.answers import Answerer


def openai_routes(answerer: Answerer) -> Any:
    """An ``APIRouter`` with OpenAI's routes, answered by ``answerer``."""
    from fastapi import APIRouter, HTTPException

    router = APIRouter()

    @router.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        """The databases, as OpenAI-style models (``model`` picks the database)."""
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "text2sql"}
                                           for name in answerer.catalog.names()]}

    @router.post("/v1/chat/completions", tags=["openai"])
    async def chat(req: ChatRequest) -> dict[str, Any]:
        """OpenAI-compatible: the last user message is the question; the database is the
        ``db`` field, else ``model`` (``school`` or ``text2sql/school``). The reply's content
        is the SQL and the result as a Markdown table; ``text2sql`` holds the full answer."""
        if req.stream:
            raise HTTPException(400, "stream: true is not supported; send stream: false")
        db = req.db or (req.model or "").removeprefix("text2sql/")
        if not db:
            raise HTTPException(422, "name the database: a 'db' field, or 'model': '<db>'")
        users = [m for m in req.messages if m.role == "user"]
        question = message_text(users[-1].content) if users else ""
        if not question.strip():
            raise HTTPException(422, "no question: the last 'user' message must hold text")
        try:
            req_sql = SqlRequest(db=db, question=question[:MAX_QUESTION_CHARS])
        except ValidationError as e:
            raise HTTPException(422, "; ".join(plain(err) for err in e.errors())) from None
        body = await answerer.answer(req_sql)
        return {"id": f"text2sql-{time.time_ns()}", "object": "chat.completion",
                "created": int(time.time()), "model": f"text2sql/{db}",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": markdown(body)}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "text2sql": body}

    return router


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
