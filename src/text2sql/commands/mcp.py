"""``text2sql mcp``: an MCP server (stdio or streamable HTTP) whose tools list databases,
describe a schema, answer a question and run read-only SQL (:mod:`text2sql.mcp_server`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from text2sql.commands import add_adapter_argument

DESCRIPTION = """\
Serve databases to MCP clients (Claude Desktop, VS Code, any MCP host) with four tools:
list_databases, describe_schema, ask_question (the model writes the SQL) and
run_sql (your own query). Every query goes the way of `text2sql ask`: one
SELECT/WITH query, read-only, within --timeout, --max-rows and --max-bytes;
on PostgreSQL and DuckDB translated from SQLite's dialect by sqlglot.

Databases: --db [NAME=]LOCATION, repeatable (a SQLite file, a PostgreSQL URL, a
DuckDB file, or a folder or glob of CSV/Parquet files; NAME defaults to the
file's name), and/or --databases DIR|YAML as for `text2sql serve`.

Transports: stdio (the default; the client starts this command) or streamable
HTTP (--transport http, at http://HOST:PORT/mcp). Over HTTP every request needs
one of the API keys (--api-key KEY or TEXT2SQL_API_KEYS) as `Authorization:
Bearer KEY`; without a key the server listens on loopback only, unless
--allow-no-key.
"""

EPILOG = """\
examples:
  text2sql mcp --db school=data/sample/database/school/school.sqlite --no-model
  text2sql mcp --db shop.duckdb --db sales=exports/ --adapter models/aligned
  TEXT2SQL_API_KEYS=$(cat key) text2sql mcp --transport http --host 0.0.0.0 \\
      --databases databases.yaml --no-model

client configuration: docs/serving.md (MCP).
"""


def register(subparsers: Any) -> None:
    from text2sql.commands.ask import add_limit_arguments, add_model_arguments
    from text2sql.commands.predict import add_backend_arguments
    from text2sql.commands.serve import add_key_arguments

    p = subparsers.add_parser(
        "mcp", help="an MCP server (stdio or HTTP): tools to list, describe, ask and query "
                    "databases read-only",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", action="append", default=[], metavar="[NAME=]LOCATION",
                   help="a database to serve (repeatable): SQLite file, postgresql:// URL, "
                        "DuckDB file, or folder or glob of CSV/Parquet files")
    p.add_argument("--databases", type=Path, default=None, metavar="DIR|YAML",
                   help="also serve a folder of SQLite databases or a YAML list, as "
                        "`text2sql serve --databases` does")
    p.add_argument("--schemas", default="public", metavar="NAMES",
                   help="PostgreSQL --db only: the schemas to read, comma-separated "
                        "(default: %(default)s)")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio (the client starts the server) or streamable HTTP "
                        "(default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="HTTP: address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8001, help="HTTP: port (default: %(default)s)")
    p.add_argument("--path", default="/mcp", help="HTTP: the endpoint (default: %(default)s)")
    add_key_arguments(p, "HTTP: ")
    add_adapter_argument(p)
    add_backend_arguments(p)
    p.add_argument("--no-model", action="store_true",
                   help="load no model: ask_question is refused, run_sql works")
    add_model_arguments(p)
    add_limit_arguments(p, max_rows=1000)
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="HTTP: uvicorn's log level (default: %(default)s)")
    p.set_defaults(func=run)


def open_databases(args: argparse.Namespace) -> Any:
    """The databases of ``--db`` and ``--databases``; none at all is an error."""
    from text2sql.ask.database import open_database
    from text2sql.io import DataError
    from text2sql.mcp_server.server import Databases
    from text2sql.serve.catalog import DB_NAME, Catalog

    schemas = [s.strip() for s in args.schemas.split(",") if s.strip()]
    named = {}
    for spec in args.db:
        name, sep, location = spec.partition("=")
        if not sep or "://" in name or not DB_NAME.fullmatch(name):
            name, location = "", spec
        db = open_database(location, schemas, name=name or None, setting="--db")
        if db.name in named:
            raise DataError(f"--db {spec}: the name {db.name!r} is taken; give NAME=LOCATION")
        named[db.name] = db
    catalog = Catalog(args.databases) if args.databases is not None else None
    if not named and catalog is None:
        raise DataError("no databases: give --db [NAME=]LOCATION (repeatable) or "
                        "--databases DIR|YAML")
    return Databases(named, catalog)


def run(args: argparse.Namespace) -> int:
    from text2sql.ask.questions import prepare_settings
    from text2sql.commands.ask import check_limits, limits_of
    from text2sql.io import DataError
    from text2sql.mcp_server.server import Answerer, build_server, http_app
    from text2sql.runtime.keys import check_bind, load_keys

    check_limits(args)
    keys = load_keys(args.api_key)
    if args.transport == "http":
        check_bind(args.host, keys, allow_open=args.allow_no_key)
    elif args.api_key:
        raise DataError("--api-key is for --transport http (over stdio the client starts "
                        "the server itself)")
    databases = open_databases(args)
    answerer = Answerer(databases, limits_of(args), prepare_settings(args.params))
    if not args.no_model:
        from text2sql.commands.ask import load_model, revise_rounds_of

        # stdout is the protocol over stdio: what loading prints goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            generate, infer, n, _ = load_model(args)
        answerer.generate, answerer.num_samples = generate, n
        answerer.prefer_nonempty = infer.prefer_nonempty
        answerer.revise_rounds = revise_rounds_of(args, infer)
    server = build_server(answerer)
    try:
        if args.transport == "stdio":
            server.run("stdio")
            return 0
        import uvicorn

        print(f"text2sql mcp: http://{args.host}:{args.port}{args.path} (MCP, streamable HTTP"
              f"{', API key required' if keys.required else ''}); Ctrl-C stops",
              file=sys.stderr, flush=True)
        uvicorn.run(http_app(server, keys, host=args.host, path=args.path), host=args.host,
                    port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
        return 0
    finally:
        databases.close()
