"""Errors as JSON: every failure a client can cause is a 4xx whose message says what to fix
(:func:`add_error_handlers`), and request bodies are read as JSON whatever their
Content-Type (:func:`json_bodies`).

Under ``/v1`` an error is OpenAI's object, so OpenAI clients raise their own exceptions
with the message: ``{"error": {"message", "type", "param", "code"}}``, and a body that does
not validate is a 400 (OpenAI's status) rather than FastAPI's 422. Elsewhere (``/healthz``,
the page) it stays ``{"error": "message"}``.
"""

from __future__ import annotations

import json
from typing import Any

from text2sql.ask.postgres import WritableRole
from text2sql.serve.answers import NoModel, Overloaded
from text2sql.serve.catalog import UnknownDatabase
from text2sql.sql.postgres import ConnectionFailed

# status -> OpenAI's error type
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "invalid_request_error",
               405: "invalid_request_error", 413: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error"}

# what the server raises -> (status, OpenAI's error code)
FAILURES: dict[type[Exception], tuple[int, str]] = {
    UnknownDatabase: (404, "model_not_found"),  # a database is a model to OpenAI's clients
    ConnectionFailed: (503, "database_unreachable"),
    WritableRole: (503, "writable_role"),
    NoModel: (503, "no_model"),
    Overloaded: (429, "server_busy"),
}


class BadRequest(ValueError):
    """A request that is well-formed JSON but cannot be answered as asked (400), naming the
    field (OpenAI's ``param``)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def error_body(path: str, status: int, message: str, *, param: str | None = None,
               code: str | None = None) -> tuple[int, dict[str, Any]]:
    """The status and JSON of an error answered at ``path``: OpenAI's object under ``/v1``
    (422 becomes 400), ``{"error": message}`` elsewhere."""
    if not is_openai_path(path):
        return status, {"error": message}
    status = 400 if status == 422 else status
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def failure(e: Exception) -> tuple[int, str, str | None]:
    """Status, message and code of an exception a request can meet (500 for the unknown)."""
    for cls, (status, code) in FAILURES.items():
        if isinstance(e, cls):
            return status, str(e.args[0]) if e.args else str(e), code
    return 500, f"internal error ({type(e).__name__}); the server's log has the details", \
        "internal_error"


def add_error_handlers(app: Any) -> None:
    """404 for an unknown database, 503 for one that cannot be reached or may not be served
    (or no model), 429 when overloaded, 400 for malformed JSON, 422 (400 under /v1) naming
    the fields that are wrong, 500 for the unexpected; each as :func:`error_body` shapes it."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def answer(request: Request, status: int, message: str, *, param: str | None = None,
               code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
        status, body = error_body(request.url.path, status, message, param=param, code=code)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _failed(request: Request, e: Exception) -> JSONResponse:
        status, message, code = failure(e)
        return answer(request, status, message, code=code,
                      headers={"Retry-After": "1"} if status == 429 else None)

    for cls in (*FAILURES, Exception):
        app.add_exception_handler(cls, _failed)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, e: BadRequest) -> JSONResponse:
        return answer(request, 400, str(e), param=e.param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        detail = str(e.detail)
        code = None
        if e.status_code == 404 and detail == "Not Found":
            detail, code = "no such page or endpoint (see /docs)", "not_found"
        return answer(request, e.status_code, detail, code=code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            err = errors[0]
            return answer(request, 400, f"malformed JSON: {err.get('ctx', {}).get('error')} "
                                        f"at character {err['loc'][-1]}", code="invalid_json")
        message = "; ".join(plain(err) for err in errors)
        if is_openai_path(request.url.path):
            return answer(request, 400, message, param=field_of(errors[0]),
                          code="invalid_value")
        return JSONResponse({"error": message,
                             "detail": [{k: err[k] for k in ("type", "loc", "msg")}
                                        for err in errors]}, status_code=422)


def json_bodies(app: Any, max_body_bytes: int) -> Any:
    """Read request bodies as JSON whatever the Content-Type (``curl -d`` sends a form type);
    a declared Content-Length over the limit gets a 413 that says the limit (FastAPI's own
    limit still stops a chunked body that grows past it)."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > max_body_bytes:
                await send_error(send, scope["path"], 413,
                                 f"request body too large: {int(length)} bytes (limit "
                                 f"{max_body_bytes}; see --max-body-kb)",
                                 code="request_too_large", close=True)
                return
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await app(scope, receive, send)

    wrapped.app = app  # type: ignore[attr-defined]
    return wrapped


async def send_error(send: Any, path: str, status: int, message: str, *,
                     code: str | None = None, headers: list[tuple[bytes, bytes]] = (),
                     close: bool = False) -> None:
    """An error answered from plain ASGI (before FastAPI), shaped by :func:`error_body`."""
    status, body = error_body(path, status, message, code=code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers,
                            *([(b"connection", b"close")] if close else [])]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def field_of(err: dict[str, Any]) -> str | None:
    """The field a validation error is about (``messages.0.content``), for OpenAI's
    ``param``."""
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return where or None


def plain(err: dict[str, Any]) -> str:
    """One validation error in a user's words, naming the field."""
    where = field_of(err) or ""
    kind = err.get("type")
    if kind == "missing":
        return f"missing field {where!r}"
    if kind == "extra_forbidden":
        return f"unknown field {where!r}"
    if kind in ("model_attributes_type", "dict_type") and not where:
        return "the body must be a JSON object"
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
