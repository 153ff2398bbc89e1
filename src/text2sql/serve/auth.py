"""Who may call the server: API keys as bearer tokens (:func:`require_key`) and, only when
asked for, CORS (:func:`allow_origins`).

The keys are :mod:`text2sql.runtime.keys`' (``--api-key``, ``TEXT2SQL_API_KEYS``); every
route needs one but the health check and the page's own files, which hold nothing of the
databases (the page asks for the key and sends it). A refusal is OpenAI's 401 and never
echoes what was sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from text2sql.runtime.keys import ApiKeys
from text2sql.serve.errors import send_error


def open_paths(static: Path) -> frozenset[str]:
    """What answers without a key: ``/healthz``, the page and the files beside it."""
    files = {f"/{p.name}" for p in static.iterdir() if p.is_file()}
    return frozenset({"/healthz", "/", *files})


def require_key(app: Any, keys: ApiKeys, free: Iterable[str]) -> Any:
    """``app`` behind ``Authorization: Bearer <key>`` (every path but ``free``); no keys:
    ``app`` itself."""
    if not keys.required:
        return app
    free = frozenset(free)

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in free:
            given = dict(scope["headers"]).get(b"authorization")
            if not keys.accepts(given.decode("latin-1") if given is not None else None):
                why = ("this server needs an API key: send `Authorization: Bearer <key>`"
                       if given is None else "the API key was not accepted")
                await send_error(send, scope["path"], 401, why, code="invalid_api_key",
                                 headers=[(b"www-authenticate", b"Bearer")])
                return
        await app(scope, receive, send)

    wrapped.app = app  # type: ignore[attr-defined]
    return wrapped


def allow_origins(app: Any, origins: Iterable[str]) -> Any:
    """``app`` answering CORS requests from the pages of ``origins`` (``--cors-origin``);
    none: ``app`` itself, so browsers keep other sites' pages from reading its answers."""
    origins = list(origins)
    if not origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(app, allow_origins=origins, allow_methods=["GET", "POST"],
                          allow_headers=["Authorization", "Content-Type"], max_age=600)
