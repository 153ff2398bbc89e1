"""The ``text2sql serve`` application: ask a folder of SQLite databases (or the SQLite files
and PostgreSQL databases a ``databases.yaml`` names) over HTTP.

A question takes the road ``text2sql ask`` takes: the schema is read and linked, the
prompt is built by the prepare stage's prompt maker, the adapter writes SQL, the SQL is
extracted, checked and run by the project's read-only runner in worker processes
(:func:`run_untrusted` and :func:`vote_sql`, the places this module runs SQL).

Under load: the model is loaded once and owned by one thread; questions wait in a
queue and whatever is waiting when the model comes free is generated as one batch
(up to ``max_batch`` prompts). SQL runs in a pool of ``sql_workers`` threads, each
query under the runner's deadline, so a runaway query holds one worker for at most
``timeout_s`` and never the event loop. Beyond ``max_pending`` requests in flight the
server answers 429 instead of queueing without end.

Databases are found by listing one folder, or named in a YAML file, and asked by name
only: a name that is not in the listing (a path, ``..``, a typo) is a 404 before any
file is opened. A PostgreSQL database gets a pool of ``sql_workers`` connections and
the guards of :mod:`text2sql.sql.postgres`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from text2sql.ask.postgres import PostgresDatabase
from text2sql.ask.questions import question_databases, read_schema
from text2sql.io import DataError
from text2sql.sql.postgres import ConnectionFailed, is_postgres_url
from text2sql.sql.schema import SQLITE_SUFFIXES, find_database

if TYPE_CHECKING:
    from text2sql.sql.schema import Schema
    from text2sql.sql.sqlite import ExecResult

STATIC = Path(__file__).parent / "static"
DB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_SAMPLES = 16
MAX_QUESTION_CHARS = 2000


@dataclass(frozen=True)
class ServeSettings:
    """What ``text2sql serve`` was started with (see its ``--help``)."""

    databases: Path  # a folder of SQLite files, or a databases.yaml
    adapter: Path | None  # None: no model, requests must carry their own SQL
    params: Path = Path("params.yaml")
    timeout_s: float = 5.0  # per query, inside SQLite
    max_rows: int = 1000  # per answer
    sql_workers: int = 4  # queries running at once
    max_pending: int = 64  # requests in flight before 429
    max_batch: int = 8  # prompts generated together
    max_body_bytes: int = 65536


class UnknownDatabase(LookupError):
    """A database name that is not in the served folder (answered 404)."""


class Overloaded(RuntimeError):
    """More requests in flight than ``max_pending`` (answered 429)."""


def run_untrusted(db_path: Path | PostgresDatabase, sql: str, timeout_s: float,
                  max_rows: int) -> ExecResult:
    """Run model-written or user-written SQL on ``db_path`` read-only, under a deadline, a
    row cap and a byte budget, in a worker process with a memory limit (the evaluator's
    runner, as ``ask`` uses it): a query that exhausts its worker costs that query only.
    On PostgreSQL: translated and run by :meth:`PostgresDatabase.run`, in a pooled session."""
    from text2sql.sql.sqlite import run_queries

    if isinstance(db_path, PostgresDatabase):
        return db_path.run(sql, timeout_s=timeout_s, max_rows=max_rows)

    [result] = run_queries([(db_path, sql)], timeout_s=timeout_s, max_rows=max_rows, workers=1)
    return result


def read_database_list(path: Path, pool_size: int = 4) -> dict[str, Path | PostgresDatabase]:
    """The databases a YAML file names: ``name: sqlite-file`` (relative to the file),
    ``name: postgresql://...`` or ``name: {url: postgresql://..., schemas: [a, b]}``.
    ``${VAR}`` in a URL is read from the environment (keep passwords out of the file)."""
    import os

    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read it as YAML ({e}) (--databases)") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a mapping of database names to SQLite files or "
                        "PostgreSQL URLs (school: school.sqlite, shop: postgresql://...)")
    found: dict[str, Path | PostgresDatabase] = {}
    for name, value in data.items():
        where = f"{path}: {name!r}"
        if not isinstance(name, str) or not DB_NAME.fullmatch(name):
            raise DataError(f"{where}: a name is letters, digits, '_', '.', '-' (up to 128)")
        spec = value if isinstance(value, dict) else {"url": value}
        url, schemas = spec.get("url"), spec.get("schemas", ["public"])
        unknown = set(spec) - {"url", "schemas"}
        if not isinstance(url, str) or unknown or not isinstance(schemas, list):
            raise DataError(f"{where}: give a SQLite file, a PostgreSQL URL, or "
                            "{url: postgresql://..., schemas: [public]}"
                            + (f" (unknown keys: {sorted(unknown)})" if unknown else ""))
        if is_postgres_url(url):
            found[name] = PostgresDatabase(os.path.expandvars(url), [str(s) for s in schemas],
                                           name=name, pool_size=pool_size)
            continue
        file = path.parent / url
        if not file.is_file():
            raise DataError(f"{where}: {file}: SQLite file not found (a path relative to "
                            f"{path.name}, or a postgresql:// URL)")
        found[name] = file
    return found


class Catalog:
    """The databases this server may open, by name: the SQLite files of one folder, or
    the SQLite files and PostgreSQL databases a YAML file names (:func:`read_database_list`).

    Folder: Spider layout (``<folder>/<db>/<db>.sqlite``) or flat (``<folder>/<db>.sqlite``);
    a ``tables.json`` beside them gives the schemas, as in the prepare stage.
    """

    def __init__(self, folder: Path, pool_size: int = 4):
        self.listed: dict[str, Path | PostgresDatabase] | None = None
        if folder.suffix in (".yaml", ".yml"):
            if not folder.is_file():
                raise DataError(f"{folder}: no such file (--databases)")
            self.listed = read_database_list(folder, pool_size)
            return
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of SQLite databases (--databases)")
        self.databases = question_databases(folder)
        self.folder: Path = self.databases.db_dir  # type: ignore[union-attr]

    def close(self) -> None:
        """Close the connection pools."""
        for target in (self.listed or {}).values():
            if isinstance(target, PostgresDatabase):
                target.close()

    def names(self) -> dict[str, Path | PostgresDatabase]:
        """Every database, by name (a folder is listed anew: files may come and go)."""
        if self.listed is not None:
            return dict(self.listed)
        found: dict[str, Path | PostgresDatabase] = {}
        for entry in sorted(self.folder.iterdir()):
            if not DB_NAME.fullmatch(entry.name):
                continue
            if entry.is_dir():
                path = find_database(self.folder, entry.name)
                if path is not None:
                    found[entry.name] = path
            elif entry.suffix in SQLITE_SUFFIXES and entry.is_file():
                found.setdefault(entry.stem, entry)
        return found

    def locate(self, name: str) -> Path | PostgresDatabase:
        """The SQLite file (or PostgreSQL database) of database ``name``;
        :class:`UnknownDatabase` unless listed."""
        path = self.names().get(name) if DB_NAME.fullmatch(name) and ".." not in name else None
        if path is None:
            raise UnknownDatabase(f"unknown database {name!r}: GET /v1/databases lists the "
                                  "databases of this server")
        return path

    def schema(self, name: str) -> tuple[Path | PostgresDatabase, Schema]:
        path = self.locate(name)
        if isinstance(path, PostgresDatabase):
            return path, path.schema(name)
        if self.listed is not None:
            return path, read_schema(path, name)
        # tables.json's schema when it has this database (as the prepare stage), else the file's
        schemas = self.databases.schemas
        return path, schemas[name] if name in schemas else read_schema(path, name)


class Generator:
    """The adapter, loaded once and driven by one thread; prompts wait in a queue and
    those waiting together are generated as one batch."""

    def __init__(self, adapter: Path, params: Path, max_batch: int):
        from text2sql.inference.hf import load_for_inference
        from text2sql.params import InferParams, load_params

        self.adapter = adapter
        self.infer = load_params("infer", params) if params.is_file() else InferParams()
        self.model, self.tokenizer = load_for_inference(adapter)
        self.max_batch = max_batch
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches: list[int] = []  # sizes of the last 1000 batches generated

    async def write(self, prompt: list[dict[str, str]], num_samples: int) -> list[Any]:
        """The generation for one prompt (waits its turn in the queue)."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((prompt, num_samples, future))
        return await future

    async def run(self) -> None:
        """Forever: take what is waiting, generate it in batches of equal ``num_samples``."""
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < self.max_batch and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            for n in sorted({item[1] for item in waiting}):
                batch = [item for item in waiting if item[1] == n and not item[2].done()]
                if not batch:
                    continue
                try:
                    outs = await loop.run_in_executor(self.thread, self._generate,
                                                      [item[0] for item in batch], n)
                except Exception as e:  # noqa: BLE001 - handed to each waiting request
                    for item in batch:
                        if not item[2].done():
                            item[2].set_exception(e)
                    continue
                self.batches = (self.batches + [len(batch)])[-1000:]
                for item, out in zip(batch, outs, strict=True):
                    if not item[2].done():
                        item[2].set_result(out)

    def _generate(self, prompts: list[list[dict[str, str]]], n: int) -> list[Any]:
        from text2sql.inference.hf import generate

        return generate(self.model, self.tokenizer, prompts, batch_size=len(prompts) * n,
                        max_new_tokens=self.infer.max_new_tokens, num_samples=n,
                        temperature=self.infer.temperature, seed=self.infer.seed,
                        progress=False)


def jsonable(value: Any) -> Any:
    """A result cell as JSON can carry it: BLOBs described, NaN and infinities as text;
    PostgreSQL's decimals as numbers, dates and times in ISO 8601, anything else as text."""
    from decimal import Decimal

    if isinstance(value, (bytes, memoryview)):
        return f"<BLOB, {len(value)} bytes>"
    if isinstance(value, Decimal):
        value = int(value) if value.is_finite() and value == value.to_integral_value() \
            else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def answer_sql(db_path: Path | PostgresDatabase, schema: Schema, sql: str, *,
               dialect: str | None, run: bool, timeout_s: float, max_rows: int) -> dict[str, Any]:
    """Translate and run ``sql`` as ``text2sql ask`` does: the body of an answer (on
    PostgreSQL, ``dialect_sql`` is the SQL that runs there unless another dialect is asked)."""
    from text2sql.sql.dialect import column_names, transpile
    from text2sql.sql.parse import MAX_BARE_JOINS, too_hard_to_parse
    from text2sql.sql.sqlite import EMPTY, PARSE_ERROR, check_read_only_query

    if isinstance(db_path, PostgresDatabase):
        dialect = dialect or "postgres"
    out: dict[str, Any] = {"sql": sql, "dialect": dialect, "dialect_sql": None, "columns": [],
                           "rows": [], "truncated": False, "error_kind": None, "error": None,
                           "executed": False}
    if not sql.strip():
        return {**out, "error_kind": EMPTY, "error": "no SQL"}
    if too_hard_to_parse(sql):
        return {**out, "error_kind": PARSE_ERROR,
                "error": f"more than {MAX_BARE_JOINS} JOINs in a row without ON (a model "
                         "repeating itself); nothing was executed"}
    if dialect:
        out["dialect_sql"] = db_path.shown(sql) if isinstance(db_path, PostgresDatabase) \
            and dialect == "postgres" else transpile(sql, dialect)
    if not run:
        kind, message = check_read_only_query(sql)
        return {**out, "error_kind": kind, "error": message or None}
    t0 = time.perf_counter()
    result = run_untrusted(db_path, sql, timeout_s, max_rows)
    out["timings"] = {"execute_s": round(time.perf_counter() - t0, 4)}
    if not result.ok:
        return {**out, "error_kind": result.error, "error": result.message,
                "executed": result.error not in (EMPTY, PARSE_ERROR, "not_read_only")}
    rows = result.rows or []
    columns = getattr(result, "columns", None) or column_names(sql, schema,
                                                               len(rows[0]) if rows else None)
    return {**out, "executed": True, "columns": list(columns), "truncated": result.truncated,
            "rows": [[jsonable(v) for v in row] for row in rows]}


def vote_sql(db_path: Path | PostgresDatabase, texts: list[str], logprobs: list[float], *,
             timeout_s: float, max_rows: int, prefer_nonempty: bool) -> tuple[str, dict[str, Any]]:
    """Self-consistency over sampled texts, as ``ask --num-samples`` does: the chosen SQL
    and how the vote went. The candidates run in a worker process (:func:`choose_all`, the
    runner of voting and evaluation), so a bomb among them costs one vote; on PostgreSQL,
    on the server (:func:`choose_live`)."""
    from text2sql.inference.voting import Candidate, choose_all, choose_live
    from text2sql.sql.extract import extract_sql

    candidates = [Candidate(t, extract_sql(t), lp) for t, lp in zip(texts, logprobs, strict=True)]
    if isinstance(db_path, PostgresDatabase):
        chosen = choose_live(db_path, candidates, timeout_s=timeout_s, max_rows=max_rows,
                             prefer_nonempty=prefer_nonempty)
    else:
        [chosen] = choose_all([(str(db_path), candidates)], timeout_s=timeout_s,
                              max_rows=max_rows, prefer_nonempty=prefer_nonempty, workers=1)
    return candidates[chosen.chosen].sql, {"samples": len(candidates), "votes": chosen.votes,
                                           "valid": chosen.valid}


class SqlRequest(BaseModel):
    """The body of POST /v1/sql."""

    model_config = ConfigDict(extra="forbid")
    db: str = Field(description="a database name from GET /v1/databases")
    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS,
                                 description="the question in plain words")
    sql: str | None = Field(None, description="run this SQL instead of asking the model "
                                              "(same read-only checks)")
    dialect: str | None = Field(None, description="also translate the SQL to this sqlglot "
                                                  "dialect (postgres, mysql, duckdb, ...)")
    num_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES,
                                    description="sample N queries and vote by result "
                                                "(default: infer.num_samples)")
    execute: bool = Field(True, description="run the SQL (false: only write/translate it)")
    max_rows: int | None = Field(None, ge=1, description="at most this many rows "
                                                         "(capped by --max-rows)")
    timeout_s: float | None = Field(None, gt=0, description="query time limit "
                                                            "(capped by --timeout)")

    @field_validator("dialect")
    @classmethod
    def _dialect(cls, v: str | None) -> str | None:
        return known_dialect(v) if v and v != "sqlite" else None

    @model_validator(mode="after")
    def _question_or_sql(self) -> SqlRequest:
        if not (self.question and self.question.strip()) and self.sql is None:
            raise ValueError("give a 'question' (or your own 'sql')")
        return self


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request (text or a list of typed parts)."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The body of POST /v1/chat/completions (OpenAI's shape; unknown fields ignored)."""

    model_config = ConfigDict(extra="ignore")  # OpenAI clients send temperature, etc.
    model: str | None = Field(None, description="a database name, or text2sql/<db>")
    messages: list[ChatMessage] = Field(min_length=1)
    db: str | None = Field(None, description="the database (wins over model)")
    stream: bool = False
    n: int | None = Field(None, ge=1, le=1)


def known_dialect(name: str) -> str:
    """``name`` when sqlglot knows it; else a ValueError listing the known ones."""
    from text2sql.sql.dialect import check_dialect

    try:
        check_dialect(name)
    except DataError as e:
        known = str(e)[str(e).find("(known"):]
        raise ValueError(f"{name!r} is not a dialect sqlglot knows {known}") from None
    return name


def create_app(settings: ServeSettings) -> Any:
    """The FastAPI application: API under ``/v1``, ``/healthz``, ``/docs``, the page at ``/``."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from text2sql.ask.questions import prepare_settings, prompt_row

    catalog = Catalog(settings.databases, pool_size=settings.sql_workers)
    prepare = prepare_settings(settings.params)
    generator = Generator(settings.adapter, settings.params, settings.max_batch) \
        if settings.adapter is not None else None
    sql_pool = ThreadPoolExecutor(max_workers=settings.sql_workers, thread_name_prefix="sql")
    in_flight = [0]

    @contextmanager
    def admitted() -> Iterator[None]:
        if in_flight[0] >= settings.max_pending:
            raise Overloaded(f"busy: {in_flight[0]} requests in flight (--max-pending "
                             f"{settings.max_pending}); retry in a moment")
        in_flight[0] += 1
        try:
            yield
        finally:
            in_flight[0] -= 1

    @asynccontextmanager
    async def lifespan(_app: Any):
        task = asyncio.create_task(generator.run()) if generator is not None else None
        yield
        if task is not None:
            task.cancel()
        sql_pool.shutdown(wait=False, cancel_futures=True)
        catalog.close()

    app = FastAPI(
        title="text2sql serve", version=_version(), lifespan=lifespan,
        max_body_size=settings.max_body_bytes, strict_content_type=False,
        description="Ask a folder of SQLite databases in plain words. Every query runs "
                    "read-only, one SELECT/WITH at a time, under a deadline and a row cap.")

    async def answer(req: SqlRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        with admitted():
            loop = asyncio.get_running_loop()
            path, schema = await loop.run_in_executor(sql_pool, catalog.schema, req.db)
            timings: dict[str, float] = {}
            result: dict[str, Any] = {"db": req.db, "question": req.question}
            timeout_s = min(req.timeout_s or settings.timeout_s, settings.timeout_s)
            max_rows = min(req.max_rows or settings.max_rows, settings.max_rows)
            if req.sql is not None:
                sql = req.sql
                result["source"] = "given"
            else:
                if generator is None:
                    raise HTTPException(503, "this server runs without a model (--no-model): "
                                             "send your own 'sql'")
                row = prompt_row(req.question, path, schema, prepare)
                n = req.num_samples or generator.infer.num_samples
                t1 = time.perf_counter()
                gen = await generator.write(row["prompt"], n)
                timings["generate_s"] = round(time.perf_counter() - t1, 4)
                result["tables"] = row["tables"]
                result["source"] = "model"
                if n == 1:
                    from text2sql.sql.extract import extract_sql

                    sql = extract_sql(gen.texts[0])
                else:
                    sql, result["vote"] = await loop.run_in_executor(
                        sql_pool, lambda: vote_sql(
                            path, gen.texts, gen.logprobs, timeout_s=timeout_s,
                            max_rows=max_rows, prefer_nonempty=generator.infer.prefer_nonempty))
            body = await loop.run_in_executor(sql_pool, lambda: answer_sql(
                path, schema, sql, dialect=req.dialect, run=req.execute, timeout_s=timeout_s,
                max_rows=max_rows))
        timings.update(body.pop("timings", {}))
        timings["total_s"] = round(time.perf_counter() - t0, 4)
        return {**result, **body, "timings": timings}

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Alive, with what is loaded and how busy it is."""
        batches = generator.batches if generator else []
        return {"status": "ok", "model": str(settings.adapter) if generator else None,
                "databases": len(catalog.names()), "in_flight": in_flight[0],
                "queued": generator.queue.qsize() if generator else 0,
                "recent_batches": len(batches),
                "mean_batch_size": round(sum(batches) / len(batches), 2) if batches else None}

    @app.get("/v1/databases", tags=["databases"])
    async def databases() -> dict[str, Any]:
        """The databases of the served folder, by name."""
        return {"databases": [{"name": name, "engine": "postgresql" if isinstance(
            target, PostgresDatabase) else "sqlite"} for name, target in catalog.names().items()]}

    @app.get("/v1/databases/{db}/schema", tags=["databases"])
    async def schema(db: str) -> dict[str, Any]:
        """Tables, columns, primary and foreign keys of one database."""
        _path, s = await asyncio.get_running_loop().run_in_executor(sql_pool, catalog.schema, db)
        return {"name": db, "tables": [
            {"name": t.name, "primary_key": t.primary_key,
             "columns": [{"name": c.name, "type": c.type} for c in t.columns]}
            for t in s.tables],
            "foreign_keys": [{"table": f.table, "column": f.column, "ref_table": f.ref_table,
                              "ref_column": f.ref_column} for f in s.foreign_keys]}

    @app.post("/v1/sql", tags=["ask"])
    async def sql(req: SqlRequest) -> dict[str, Any]:
        """A question (or your SQL) in; the SQL, its translation and the result table out.

        A query that fails or is refused is still a 200: ``error_kind`` says why
        (``not_read_only``, ``parse_error``, ``unknown_table``, ``unknown_column``,
        ``timeout``, ``execution_error``, ``empty_prediction``)."""
        return await answer(req)

    @app.get("/v1/models", tags=["openai"])
    async def models() -> dict[str, Any]:
        """The databases, as OpenAI-style models (``model`` picks the database)."""
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "text2sql"}
                                           for name in catalog.names()]}

    @app.post("/v1/chat/completions", tags=["openai"])
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
        question = _text(users[-1].content) if users else ""
        if not question.strip():
            raise HTTPException(422, "no question: the last 'user' message must hold text")
        try:
            req_sql = SqlRequest(db=db, question=question[:MAX_QUESTION_CHARS])
        except ValidationError as e:
            raise HTTPException(422, "; ".join(_plain(err) for err in e.errors())) from None
        body = await answer(req_sql)
        return {"id": f"text2sql-{time.time_ns()}", "object": "chat.completion",
                "created": int(time.time()), "model": f"text2sql/{db}",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": _markdown(body)}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                "text2sql": body}

    @app.exception_handler(UnknownDatabase)
    async def _unknown_db(_request: Request, e: UnknownDatabase) -> JSONResponse:
        return JSONResponse({"error": str(e.args[0])}, status_code=404)

    @app.exception_handler(ConnectionFailed)
    async def _unreachable(_request: Request, e: ConnectionFailed) -> JSONResponse:
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
        return JSONResponse({"error": "; ".join(_plain(err) for err in errors),
                             "detail": [{k: err[k] for k in ("type", "loc", "msg")}
                                        for err in errors]}, status_code=422)

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    app.state.settings, app.state.catalog, app.state.generator = settings, catalog, generator
    return _json_bodies(app, settings.max_body_bytes)


def _json_bodies(app: Any, max_body_bytes: int) -> Any:
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


def _plain(err: dict[str, Any]) -> str:
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


def _text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of an OpenAI message content (a string, or a list of typed parts)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def _markdown(body: dict[str, Any], shown_rows: int = 20) -> str:
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


def _version() -> str:
    from text2sql import __version__

    return __version__
