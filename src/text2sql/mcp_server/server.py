"""The MCP server: four tools over named databases, each through the one answer pipeline
(:mod:`text2sql.ask.pipeline`) and its guards and limits.

- ``list_databases``: the names an MCP client may ask, with their engine;
- ``describe_schema``: a database's tables, columns, types and keys;
- ``ask_question``: a question in plain words; the model writes the SQL, which is guarded and
  run read-only (needs a model: without one the tool says to use ``run_sql``);
- ``run_sql``: a given SQLite-dialect query, with the same checks (translated for PostgreSQL
  and DuckDB).

Answers are :func:`text2sql.serve.answers.answer_body`'s JSON, as ``serve`` gives them. Over
HTTP every request needs one of the API keys (:mod:`text2sql.runtime.keys`) as a bearer token
(:class:`RequireKey`), else 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from text2sql.ask.database import Database
    from text2sql.ask.pipeline import Generate, Limits
    from text2sql.params import PrepareParams
    from text2sql.runtime.keys import ApiKeys
    from text2sql.serve.catalog import Catalog
    from text2sql.sql.schema import Schema

INSTRUCTIONS = """\
Ask SQL databases read-only. list_databases names them; describe_schema shows a database's
tables and columns; ask_question turns a question into SQL with a fine-tuned model and runs
it; run_sql runs your own query (SQLite dialect; one SELECT/WITH query, translated for
PostgreSQL and DuckDB). Writes, several statements and file or setting functions are refused;
each query has a time limit, a row cap and a byte cap."""


@dataclass
class Databases:
    """The databases a server answers on, by name: ``named`` (``--db``) and a serve-style
    ``catalog`` (``--databases``: a folder or a YAML list)."""

    named: dict[str, Database] = field(default_factory=dict)
    catalog: Catalog | None = None

    def names(self) -> dict[str, Database]:
        return {**(self.catalog.names() if self.catalog is not None else {}), **self.named}

    def schema(self, name: str) -> tuple[Database, Schema]:
        """The database called ``name`` and its schema; a ``LookupError`` naming the known ones."""
        if name in self.named:
            db = self.named[name]
            return db, db.schema(name)
        if self.catalog is not None:
            from text2sql.serve.catalog import UnknownDatabase

            try:
                return self.catalog.schema(name)
            except UnknownDatabase:
                pass
        raise LookupError(f"unknown database {name!r}; list_databases names them: "
                          f"{', '.join(sorted(self.names())) or '(none)'}")

    def close(self) -> None:
        for db in self.named.values():
            db.close()
        if self.catalog is not None:
            self.catalog.close()


@dataclass
class Answerer:
    """What the tools share: the databases, the model (``generate``; ``None``: SQL only),
    the prompt settings and the query limits."""

    databases: Databases
    limits: Limits
    settings: PrepareParams
    generate: Generate | None = None
    num_samples: int = 1
    prefer_nonempty: bool = True
    revise_rounds: int = 0  # a failing or empty query asked again, up to this many times
    _model_lock: threading.Lock = field(default_factory=threading.Lock)

    def list_databases(self) -> list[dict[str, str]]:
        return [{"name": name, "engine": db.engine} for name, db in sorted(self.names().items())]

    def names(self) -> Mapping[str, Database]:
        return self.databases.names()

    def describe_schema(self, db: str) -> dict[str, Any]:
        database, schema = self.databases.schema(db)
        return {"db": db, "engine": database.engine, "dialect": database.dialect or "sqlite",
                "tables": [{"name": t.name, "primary_key": t.primary_key,
                            "columns": [{"name": c.name, "type": c.type} for c in t.columns]}
                           for t in schema.tables],
                "foreign_keys": [{"table": f.table, "column": f.column,
                                  "ref_table": f.ref_table, "ref_column": f.ref_column}
                                 for f in schema.foreign_keys]}

    def run_sql(self, db: str, sql: str) -> dict[str, Any]:
        from text2sql.ask.pipeline import run_sql

        database, schema = self.databases.schema(db)
        answer = run_sql(database, schema, sql, limits=self.limits, dialects=[database.dialect])
        return self._body(db, None, answer, database)

    def ask_question(self, db: str, question: str) -> dict[str, Any]:
        from text2sql.ask.pipeline import answer_question

        if self.generate is None:
            raise RuntimeError("this server runs without a model (--no-model): write the SQL "
                               "yourself and call run_sql")
        if not question.strip():
            raise ValueError("give a question in plain words")
        database, schema = self.databases.schema(db)
        with self._model_lock:  # one generation at a time: the model is not thread-safe
            answer = answer_question(question, database, schema, self.generate,
                                     settings=self.settings, num_samples=self.num_samples,
                                     limits=self.limits, dialects=[database.dialect],
                                     prefer_nonempty=self.prefer_nonempty,
                                     revise_rounds=self.revise_rounds)
        return self._body(db, question, answer, database)

    @staticmethod
    def _body(db: str, question: str | None, answer: Any, database: Database) -> dict[str, Any]:
        from text2sql.serve.answers import answer_body

        return {"db": db, "question": question, **answer_body(answer, database.dialect),
                "refused": answer.refused}


def build_server(answerer: Answerer) -> Any:
    """An :class:`mcp.server.mcpserver.MCPServer` with the four tools on ``answerer``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    from text2sql import __version__

    server = MCPServer("text2sql", instructions=INSTRUCTIONS, version=__version__,
                       log_level="WARNING")
    reading = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                              open_world_hint=False)

    def tool(fn: Callable[..., Any], description: str) -> None:
        server.add_tool(fn, name=fn.__name__, description=description, annotations=reading)

    def list_databases() -> dict[str, Any]:
        return {"databases": answerer.list_databases()}

    def describe_schema(db: str) -> dict[str, Any]:
        return told(answerer.describe_schema, db)

    def ask_question(db: str, question: str) -> dict[str, Any]:
        return told(answerer.ask_question, db, question)

    def run_sql(db: str, sql: str) -> dict[str, Any]:
        return told(answerer.run_sql, db, sql)

    tool(list_databases, "The databases this server answers on: name and engine (sqlite, "
                         "postgresql, duckdb).")
    tool(describe_schema, "The tables of database `db`: columns with their types, primary "
                          "and foreign keys.")
    tool(ask_question, "Answer `question` (plain words) on database `db`: a fine-tuned model "
                       "writes SQLite-dialect SQL, which runs read-only within the server's "
                       "limits. Returns the SQL, the SQL as it ran (dialect_sql), columns, "
                       "rows, and error_kind/error when it failed or was refused.")
    tool(run_sql, "Run one read-only SELECT/WITH query `sql` (SQLite dialect; translated for "
                  "PostgreSQL and DuckDB) on database `db`. Writes, several statements and "
                  "file or setting functions are refused; a time limit, a row cap and a byte "
                  "cap apply. Returns columns and rows, or error_kind/error.")
    return server


def told(fn: Callable[..., dict[str, Any]], *args: str) -> dict[str, Any]:
    """``fn(*args)``; an error the caller can act on (an unknown database, no model, a
    database that cannot be read) as the tool's error message, without a traceback."""
    from mcp.server.mcpserver.exceptions import ToolError

    from text2sql.io import DataError

    try:
        return fn(*args)
    except (LookupError, RuntimeError, ValueError, DataError) as e:
        raise ToolError(str(e)) from None


class RequireKey:
    """ASGI middleware: an HTTP request without one of ``keys`` as ``Authorization: Bearer``
    gets 401 (no key configured: every request passes; see :func:`text2sql.runtime.keys.check_bind`)."""

    def __init__(self, app: Any, keys: ApiKeys):
        self.app, self.keys = app, keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.keys.required:
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if not self.keys.accepts(authorization):
                body = json.dumps({"error": "missing or wrong API key: send "
                                            "`Authorization: Bearer KEY`"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(server: Any, keys: ApiKeys, *, host: str, path: str = "/mcp") -> Any:
    """The streamable-HTTP ASGI app of ``server`` at ``path``, behind ``keys``."""
    return RequireKey(server.streamable_http_app(streamable_http_path=path, host=host), keys)
