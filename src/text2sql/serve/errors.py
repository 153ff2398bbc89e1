"""Errors as JSON: every failure a client can cause is a 4xx whose ``error`` says what to fix
(:func:`add_error_handlers`), and request bodies are read as JSON whatever their
Content-Type (:func:`json_bodies`)."""

from __future__ import annotations

from typing import Any

from text2sql.serve.answers import NoModel, Overloaded
from text2sql.serve.catalog import UnknownDatabase
from text2sql.sql.postgres import ConnectionFailed


def add_error_handlers(app: Any) -> None:
    """404 for an unknown database, 503 for one that cannot be reached (or no model), 429
    when overloaded, 400 for malformed JSON, 422 naming the fields that are wrong."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(UnknownDatabase)
    async def _unknown_db(_request: Request, e: UnknownDatabase) -> JSONResponse:
        return JSONResponse({"error": str(e.args[0])}, status_code=404)

    @app.exception_handler(ConnectionFailed)
    async def _unreachable(_request: Request, e: ConnectionFailed) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=503)

    @app.exception_handler(NoModel)
    async def _no_model(_request: Request, e: NoModel) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=503)

    @app.exception_handler(Overloaded)
    async def _overloaded(_request: Request, e: Overloaded) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=429, headers={"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        detail = e.detail
        if e.status_code == 404 and detail == "Not Found":
            detail = "no such page or endpoint (see /docs)"
        return JSONResponse({"error": detail}, status_code=e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            err = errors[0]
            return JSONResponse({"error": f"malformed JSON: {err.get('ctx', {}).get('error')} "
                                          f"at character {err['loc'][-1]}"}, status_code=400)
        return JSONResponse({"error": "; ".join(plain(err) for err in errors),
                             "detail": [{k: err[k] for k in ("type", "loc", "msg")}
                                        for err in errors]}, status_code=422)


def json_bodies(app: Any, max_body_bytes: int) -> Any:
    """Read request bodies as JSON whatever the Content-Type (``curl -d`` sends a form type);
    a declared Content-Length over the limit gets a 413 that says the limit (FastAPI's own
    limit still stops a chunked body that grows past it)."""
    import json

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > max_body_bytes:
                body = json.dumps({"error": f"request body too large: {int(length)} bytes "
                                            f"(limit {max_body_bytes}; see --max-body-kb)"})
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await app(scope, receive, send)

    wrapped.app = app  # type: ignore[attr-defined]
    return wrapped


def plain(err: dict[str, Any]) -> str:
    """One validation error in a user's words, naming the field."""
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    kind = err.get("type")
    if kind == "missing":
        return f"missing field {where!r}"
    if kind == "extra_forbidden":
        return f"unknown field {where!r}"
    if kind in ("model_attributes_type", "dict_type") and not where:
        return "the body must be a JSON object"
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
