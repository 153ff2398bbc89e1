"""``text2sql serve``: an HTTP API and a web page to ask a folder of SQLite databases, or the
SQLite and PostgreSQL databases a databases.yaml names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from text2sql.commands import ADAPTER_CONFIG, add_adapter_argument, resolve_adapter
from text2sql.commands.ask import add_revise_argument

DESCRIPTION = """\
Serve a folder of SQLite databases: an HTTP API (JSON, OpenAI-compatible chat
completions too) and a web page to pick a database, ask, and see the SQL and
the result table.

Every question goes the way of `text2sql ask`: schema linking, the prepare
stage's prompt, the adapter, SQL extraction, then the read-only runner (one
SELECT/WITH query, the file opened read-only, a time limit, a row cap).
The model loads once; questions are queued and those waiting together are
generated as one batch; queries run in a pool of --sql-workers threads. With
--revise-rounds N a query that fails or returns no rows is asked again, the
database's error in a follow-up turn, up to N times (the answer lists them).
Databases are served by name only (<folder>/<db>/<db>.sqlite or
<folder>/<db>.sqlite): anything else is a 404. With --databases FILE.yaml,
the names map to SQLite files or PostgreSQL URLs:

  school: school/school.sqlite                  # relative to the YAML file
  shop: postgresql://reader@db.example/shop     # password: PGPASSWORD, ~/.pgpass or ${VAR}
  warehouse: {url: "postgresql://reader:${DW_PASSWORD}@dw/dw", schemas: [sales, public]}

On PostgreSQL the SQL is translated with sqlglot and runs in a read-only
transaction under statement_timeout, from a pool of --sql-workers connections;
a role that can write (or a superuser) is refused unless --allow-writable-role.

API keys (--api-key, repeatable, or TEXT2SQL_API_KEYS=KEY1,KEY2) are asked as
`Authorization: Bearer KEY` on every route but /healthz and the page's files;
listening beyond this machine (--host 0.0.0.0) needs one, or --allow-no-key.
"""

EPILOG = """\
examples:
  text2sql serve                                   # data/sample/database, models/aligned
  text2sql serve --databases ./dbs --adapter models/aligned --port 8080
  text2sql serve --databases ./dbs --no-model      # only run SQL sent by clients
  text2sql serve --databases databases.yaml        # SQLite files and PostgreSQL databases
  TEXT2SQL_API_KEYS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \
    text2sql serve --host 0.0.0.0                  # other machines, with a key
  curl -s localhost:8000/v1/sql -d '{"db": "school", "question": "How many students are there?"}'

then open http://127.0.0.1:8000 (the page) or http://127.0.0.1:8000/docs (the API).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="an HTTP API and a web page to ask a folder of SQLite databases",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--databases", type=Path, default=Path("data/sample/database"),
                   metavar="DIR|YAML",
                   help="folder of SQLite databases, served by name, or a .yaml file mapping "
                        "names to SQLite files and PostgreSQL URLs (default: %(default)s)")
    add_adapter_argument(p)
    p.add_argument("--no-model", action="store_true",
                   help="load no model: clients send their own SQL (field 'sql')")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s; 0.0.0.0 for every one)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                   help="prepare: and infer: settings to use when the file exists "
                        "(default: %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="time limit of each query, inside SQLite (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=1000, metavar="N",
                   help="rows per answer at most (default: %(default)s)")
    p.add_argument("--sql-workers", type=int, default=4, metavar="N",
                   help="queries running at once (default: %(default)s)")
    p.add_argument("--max-pending", type=int, default=64, metavar="N",
                   help="requests in flight before new ones get 429 (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=8, metavar="N",
                   help="questions generated together at most (default: %(default)s)")
    add_revise_argument(p)
    p.add_argument("--max-body-kb", type=int, default=64, metavar="KB",
                   help="largest request body (default: %(default)s KB; larger: 413)")
    add_key_arguments(p)
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages of this origin call the API from a browser "
                        "(https://chat.example; repeatable; default: none)")
    p.add_argument("--allow-writable-role", action="store_true",
                   help="PostgreSQL: serve even as a role that can write or is a superuser "
                        "(refused otherwise; see docs/postgresql.md)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default: %(default)s)")
    p.set_defaults(func=run)


def add_key_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--api-key`` (repeatable) and ``--allow-no-key``, read by
    :func:`text2sql.runtime.keys.load_keys` and ``check_bind``; shared by ``serve`` and
    ``mcp`` (``prefix``: ``"HTTP: "`` where only one transport uses them)."""
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"{prefix}accept this API key as `Authorization: Bearer KEY` "
                        "(repeatable; also TEXT2SQL_API_KEYS, which keeps keys out of the "
                        "process list)")
    p.add_argument("--allow-no-key", action="store_true",
                   help=f"{prefix}listen beyond this machine (--host) without an API key "
                        "(a trusted network only)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from text2sql.io import DataError
    from text2sql.runtime.keys import check_bind, fingerprint, load_keys
    from text2sql.serve.app import ServeSettings, create_app

    keys = load_keys(args.api_key)
    check_bind(args.host, keys, allow_open=args.allow_no_key)
    for name in ("timeout", "max_rows", "sql_workers", "max_pending", "max_batch", "max_body_kb"):
        if getattr(args, name) <= 0:
            raise DataError(f"--{name.replace('_', '-')} must be > 0")
    no_model = "--no-model to serve only SQL sent by clients"
    adapter = None if args.no_model else resolve_adapter(args.adapter, "text2sql serve",
                                                         also=no_model)
    if adapter is not None and not (adapter / ADAPTER_CONFIG).is_file():
        raise DataError(f"{adapter}: no trained adapter ({ADAPTER_CONFIG}); run `dvc repro "
                        f"align` (or `dvc pull`), pass --adapter DIR, or {no_model}")
    settings = ServeSettings(
        databases=args.databases, adapter=adapter,
        params=args.params, timeout_s=args.timeout, max_rows=args.max_rows,
        sql_workers=args.sql_workers, max_pending=args.max_pending, max_batch=args.max_batch,
        max_body_bytes=args.max_body_kb * 1024, api_keys=keys,
        cors_origins=tuple(args.cors_origin), allow_writable_role=args.allow_writable_role,
        revise_rounds=args.revise_rounds)
    app = create_app(settings)
    print(f"text2sql serve: http://{args.host}:{args.port} (page), "
          f"http://{args.host}:{args.port}/docs (API); Ctrl-C stops", flush=True)
    named = ", ".join(fingerprint(k) for k in keys.keys)
    print(f"API keys: {len(keys.keys)} ({named})" if keys.required else
          "API keys: none (anyone who reaches the port may ask)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0
