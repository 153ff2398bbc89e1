"""The ``text2sql serve`` application: ask a folder of SQLite databases (or the SQLite files
and PostgreSQL databases a ``databases.yaml`` names) over HTTP.

A question takes the road ``text2sql ask`` takes (:mod:`text2sql.ask.pipeline`): the schema
is read and linked, the prompt built by the prepare stage's prompt maker, the adapter writes
SQL (:mod:`~text2sql.serve.batcher`, in batches), and the SQL is extracted, checked and run
read-only (:mod:`~text2sql.serve.answers`). The rest: which databases may be asked
(:mod:`~text2sql.serve.catalog`), the request bodies (:mod:`~text2sql.serve.schemas`), the
routes (:mod:`~text2sql.serve.routes`, :mod:`~text2sql.serve.openai_compat`), errors as JSON
(:mod:`~text2sql.serve.errors`), API keys and CORS (:mod:`~text2sql.serve.auth`) and the page
(``static/``, at ``/``).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from text2sql.serve.answers import Answerer
from text2sql.serve.auth import allow_origins, open_paths, require_key
from text2sql.serve.batcher import BatchGenerator
from text2sql.serve.errors import add_error_handlers, json_bodies
from text2sql.serve.openai_compat import openai_routes
from text2sql.serve.routes import api_routes
from text2sql.serve.settings import ServeSettings

__all__ = ["STATIC", "ServeSettings", "create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(settings: ServeSettings) -> Any:
    """The FastAPI application: API under ``/v1``, ``/healthz``, ``/docs``, the page at ``/``;
    behind ``settings.api_keys`` when there are any. A PostgreSQL database whose role can write
    is refused here, unless allowed (:meth:`~text2sql.serve.catalog.Catalog.check_roles`)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    generator = BatchGenerator(settings.adapter, settings.params, settings.max_batch) \
        if settings.adapter is not None else None
    answerer = Answerer(settings, generator)
    try:
        answerer.catalog.check_roles()
    except BaseException:
        answerer.close()
        raise

    @asynccontextmanager
    async def lifespan(_app: Any):
        task = asyncio.create_task(generator.run()) if generator is not None else None
        yield
        if task is not None:
            task.cancel()
        answerer.close()

    app = FastAPI(
        title="text2sql serve", version=_version(), lifespan=lifespan,
        max_body_size=settings.max_body_bytes, strict_content_type=False,
        description="Ask a folder of SQLite databases in plain words. Every query runs "
                    "read-only, one SELECT/WITH at a time, under a deadline and a row cap.")
    app.include_router(api_routes(answerer))
    app.include_router(openai_routes(answerer))
    add_error_handlers(app)
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    app.state.settings, app.state.catalog, app.state.generator = \
        settings, answerer.catalog, generator
    guarded = require_key(json_bodies(app, settings.max_body_bytes), settings.api_keys,
                          open_paths(STATIC))
    return allow_origins(guarded, settings.cors_origins)


def _version() -> str:
    from text2sql import __version__

    return __version__
