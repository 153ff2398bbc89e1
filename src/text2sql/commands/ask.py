"""``text2sql ask``: a question in plain words against any SQLite file, PostgreSQL database,
DuckDB file or folder of CSV/Parquet files, answered as a table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text2sql.commands import add_adapter_argument
from text2sql.sql.dialect import check_dialect

if TYPE_CHECKING:
    from text2sql.ask.database import Database
    from text2sql.ask.pipeline import Answer, Generate, Limits
    from text2sql.params import InferParams
    from text2sql.sql.schema import Schema

DESCRIPTION = """\
Ask a question of any SQLite database, or a PostgreSQL one, in plain words.

What happens, in order:
  1. the schema (tables, columns, keys) is read from the SQLite file (or from
     PostgreSQL's catalog, for the schemas of --schemas);
  2. the tables the question is about are linked (plus the foreign-key paths
     between them), as the prepare stage does for training prompts, using the
     prepare: settings of params.yaml when there is one (see --params);
  3. the fine-tuned adapter, on the 16-bit base it was trained from (4-bit with
     infer.load_in_4bit: true), or a GGUF file through llama.cpp (--backend
     llama.cpp --model FILE.gguf), writes SQL (greedy; with --num-samples N it
     samples N queries, runs each, and keeps the answer most of them agree on;
     with --revise-rounds N a query that fails or returns no rows is first asked
     again, the database's error in a follow-up turn, up to N times);
  4. the SQL is shown (and, with --dialect, also translated with sqlglot);
  5. it runs read-only, in a worker process with a memory limit: the file is
     opened read-only and only one SELECT/WITH query is accepted (anything else
     is refused and nothing runs), with a time limit (--timeout), a row cap
     (--max-rows) and a cap on the bytes fetched (--max-bytes);
  6. the result is printed as a table (long values cut, marked with what was left out).

On PostgreSQL (--db postgresql://...) the SQL, written in SQLite's dialect, is
translated with sqlglot (both are shown; SQL it cannot translate is a parse
error) and runs in a read-only transaction that is rolled back, under
statement_timeout, with the same single-query check and caps; calls of server
functions with side effects (pg_*, set_config, nextval, dblink, ...) are refused.
Connect as a role with SELECT rights only (see docs/postgresql.md).

On DuckDB (--db shop.duckdb, or a folder or glob of CSV/Parquet files, one
table per file, named after it) the SQL is translated with sqlglot too and runs
in a worker process: the file opened read-only (files: views of an in-memory
database), under DuckDB's memory limit, with file access and settings locked,
interrupted at --timeout; calls that reach files or settings (read_csv,
read_parquet, current_setting, getenv, ...) are refused.
"""

EPILOG = """\
examples:
  text2sql ask --db school.sqlite "Which students got an A?"
  text2sql ask --db shop.db --dialect postgres "Total sales per month in 2024"
  text2sql ask --db shop.db --num-samples 5 "Who bought the most?"
  text2sql ask --db shop.db --revise-rounds 2 "Who bought the most?"   # fix failing SQL
  text2sql ask --backend llama.cpp --model models/export/model-q4_k_m.gguf --db shop.db "..."
  text2sql ask --db shop.db --sql "SELECT count(*) FROM orders"   # run your own SQL, same checks
  text2sql ask --db postgresql://reader@localhost/shop "Who bought the most?"
  text2sql ask --db shop.duckdb "Who bought the most?"
  text2sql ask --db exports/ "Total sales per region"          # exports/*.csv, *.parquet
  text2sql ask --db 'exports/2024-*.parquet' "Total sales per region"
  PGHOST=db.example PGUSER=reader PGDATABASE=shop text2sql ask --db postgresql:// "..."

exit status: 0 answered; 1 the query failed (error shown); 2 bad arguments or
files, or a database that cannot be reached; 3 refused (not a single read-only
query: nothing was executed).
"""

FAILED, REFUSED = 1, 3
MAX_BYTES = 16 * 2**20


def register(subparsers: Any) -> None:
    from text2sql.commands.predict import add_backend_arguments

    p = subparsers.add_parser(
        "ask", help="ask a question of a SQLite, PostgreSQL or DuckDB database (or CSV/Parquet "
                    "files); see the SQL and the result table",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", nargs="?", help="the question, in quotes (not needed with --sql)")
    p.add_argument("--db", required=True, metavar="FILE|DIR|URL",
                   help="the SQLite file to ask (never modified), a PostgreSQL URL "
                        "(postgresql://user@host:port/db; libpq's PGHOST, PGUSER, PGPASSWORD, "
                        "... fill in what it leaves out), a DuckDB file (.duckdb, .ddb), or a "
                        "folder or glob of CSV/Parquet files (one table per file)")
    p.add_argument("--schemas", default="public", metavar="NAMES",
                   help="PostgreSQL only: the schemas to ask about, comma-separated "
                        "(default: %(default)s)")
    p.add_argument("--allow-writable-role", action="store_true",
                   help="PostgreSQL: connect even as a role that can write or is a superuser "
                        "(refused otherwise; see docs/postgresql.md)")
    add_adapter_argument(p)
    add_backend_arguments(p)
    add_run_arguments(p)
    add_model_arguments(p)
    p.add_argument("--sql", metavar="SQL",
                   help="skip the model and run this SQL (with the same read-only checks)")
    p.set_defaults(func=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--num-samples``, ``--max-new-tokens``, ``--revise-rounds`` and ``--params``, which
    :func:`load_model` reads; shared by ``ask`` and ``mcp``."""
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="sample N queries and vote by result (default: infer.num_samples, else 1)")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="longest answer in tokens (default: infer.max_new_tokens)")
    add_revise_argument(p)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                   help="prepare: and infer: settings to use when the file exists "
                        "(default: %(default)s)")


def add_revise_argument(p: argparse.ArgumentParser) -> None:
    """``--revise-rounds N``, which :func:`revise_rounds_of` reads; shared by ``ask``,
    ``chat``, ``mcp`` and ``serve``."""
    p.add_argument("--revise-rounds", type=rounds, default=None, metavar="N",
                   help="ask a query that fails or returns no rows again, the database's "
                        "error in a follow-up turn, up to N times; with several samples, "
                        "each one before the vote (default: infer.revise_rounds, else 0)")


def rounds(text: str) -> int:
    """A ``--revise-rounds`` value: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more rounds")
    return value


def revise_rounds_of(args: argparse.Namespace, infer: InferParams) -> int:
    """``--revise-rounds``, else ``infer.revise_rounds``."""
    given = getattr(args, "revise_rounds", None)
    return infer.revise_rounds if given is None else given


def add_limit_arguments(p: argparse.ArgumentParser, *, max_rows: int = 100) -> None:
    """How a query is limited (``--timeout``, ``--max-rows``, ``--max-bytes``), which
    :func:`limits_of` reads and :func:`check_limits` checks; shared by ``ask``, ``chat``
    and ``mcp``."""
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="stop a query after this long (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=max_rows, metavar="N",
                   help="fetch at most N rows per answer (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=MAX_BYTES, metavar="N",
                   help="stop a result holding more than N bytes of values (default: %(default)s)")


def check_limits(args: argparse.Namespace) -> None:
    """Refuse a ``--timeout``, ``--max-rows`` or ``--max-bytes`` that allows nothing."""
    from text2sql.io import DataError

    if args.timeout <= 0 or args.max_rows < 1 or args.max_bytes < 1:
        raise DataError("--timeout must be > 0, --max-rows and --max-bytes at least 1")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options :func:`check_limits_and_schema`, :func:`limits_of` and :func:`show_answer`
    read: how a query is shown (``--dialect``, ``--width``) and limited
    (:func:`add_limit_arguments`); shared by ``ask`` and ``chat``."""
    p.add_argument("--dialect", metavar="NAME",
                   help="also show the SQL translated to this sqlglot dialect "
                        "(postgres, mysql, duckdb, bigquery, snowflake, tsql, ...)")
    add_limit_arguments(p)
    p.add_argument("--width", type=int, default=80, metavar="CHARS",
                   help="cut longer values in the table to this many characters "
                        "(default: %(default)s)")


def check_limits_and_schema(args: argparse.Namespace) -> tuple[Database, Schema]:
    """Refuse bad ``--timeout``/``--max-rows``/``--max-bytes``/``--width``/``--dialect``
    values and a ``--db`` that is neither a SQLite file with tables nor a PostgreSQL
    database with readable tables; the database and its schema."""
    from text2sql.ask.database import open_database
    from text2sql.io import DataError

    if args.dialect:
        check_dialect(args.dialect)
    check_limits(args)
    if args.width < 8:
        raise DataError("--width must be at least 8")
    schemas = getattr(args, "schemas", "public")
    db = open_database(str(args.db), [s.strip() for s in schemas.split(",") if s.strip()],
                       allow_writable_role=getattr(args, "allow_writable_role", False))
    schema = db.schema()
    if not schema.tables:
        raise DataError(f"{db}: {db.why_no_tables()}")
    return db, schema


def limits_of(args: argparse.Namespace) -> Limits:
    """The query limits ``--timeout``, ``--max-rows`` and ``--max-bytes`` set."""
    from text2sql.ask.pipeline import Limits

    return Limits(timeout_s=args.timeout, max_rows=args.max_rows, max_bytes=args.max_bytes)


def run(args: argparse.Namespace) -> int:
    from text2sql.ask.pipeline import answer_question, run_sql
    from text2sql.ask.questions import prepare_settings
    from text2sql.io import DataError

    if args.sql is None and not (args.question or "").strip():
        raise DataError("give a question, or your own SQL with --sql")
    db, schema = check_limits_and_schema(args)
    out = sys.stdout
    dialects = [db.dialect, args.dialect]
    if args.sql is not None:
        answer = run_sql(db, schema, args.sql, limits=limits_of(args), dialects=dialects)
        note = "given with --sql"
    else:
        generate, infer, n, load_s = load_model(args)
        answer = answer_question(args.question, db, schema, generate,
                                 settings=prepare_settings(args.params), num_samples=n,
                                 limits=limits_of(args), dialects=dialects,
                                 prefer_nonempty=infer.prefer_nonempty,
                                 revise_rounds=revise_rounds_of(args, infer))
        print(f"tables: {', '.join(answer.tables or [])}", file=out)
        show_revisions(answer, out)
        seconds = answer.generate_s or 0.0
        note = f"generated in {seconds:.1f} s, model loaded in {load_s:.1f} s" \
            if answer.vote is None else (f"{answer.vote.votes} of {n} samples agree; "
                                         f"{answer.vote.valid} ran; {seconds:.1f} s")
    print(f"SQL ({note}):\n  {indent(answer.sql or '(the model wrote no SQL)')}", file=out)
    return show_answer(answer, args, out)


def show_revisions(answer: Answer, out: Any) -> None:
    """The answers the shown SQL replaced (``--revise-rounds``), and what each got; and
    the last answer, when it failed and the shown SQL is an earlier one that ran."""
    from text2sql.inference.revision import NO_ROWS

    for k, earlier in enumerate(answer.revisions, 1):
        why = "no rows" if earlier.outcome == NO_ROWS else \
            f"{earlier.message} [{earlier.outcome}]"
        print(f"revision {k}: asked again after\n  {indent(earlier.sql or '(no SQL)')}\n"
              f"  -> {why}", file=out)
    if answer.discarded is not None:
        last = answer.discarded
        print(f"set aside: the last revision failed, the earlier answer that ran is kept\n"
              f"  {indent(last.sql or '(no SQL)')}\n  -> {last.message} [{last.outcome}]",
              file=out)


def show_answer(answer: Answer, args: argparse.Namespace, out: Any) -> int:
    """Print ``answer`` (:mod:`text2sql.ask.pipeline`): its translations and result table
    to ``out`` (``args.width`` wide), or why it was refused or failed to stderr; the exit
    status."""
    me = f"text2sql {getattr(args, 'command', 'ask')}"
    if answer.guard == "bare_joins":
        print(f"{me}: refused: the SQL has {answer.error}. Nothing was executed.",
              file=sys.stderr)
        return REFUSED
    for dialect, shown in answer.translations.items():
        print(f"SQL ({dialect}):\n  {indent(shown)}", file=out)
    if answer.guard == "read_only":
        print(f"{me}: refused: {refusal(answer.error_kind or '', answer.error or '')}. Only a "
              "single read-only query (SELECT or WITH) is run; nothing was executed.",
              file=sys.stderr)
        return REFUSED
    if answer.guard == "database":  # stopped by a guard of the database: nothing was changed
        print(f"{me}: refused: {answer.error}. Only a single read-only query "
              "(SELECT or WITH) is run; nothing was changed.", file=sys.stderr)
        return REFUSED
    if not answer.ok:
        hint = {"timeout": f" (after the {args.timeout:g} s limit; raise --timeout)",
                "too_large": " (raise --max-bytes, or select less)"
                }.get(answer.error_kind or "", "")
        print(f"{me}: the query failed: {answer.error} [{answer.error_kind}]{hint}",
              file=sys.stderr)
        return FAILED
    rows = answer.rows
    print(format_table(answer.columns, rows, args.width), file=out)
    more = f"; stopped at --max-rows {args.max_rows}, there are more" if answer.truncated else ""
    seconds = answer.result.seconds if answer.result is not None else 0.0
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more}; {seconds:.3f} s)", file=out)
    return 0


def load_model(args: argparse.Namespace) -> tuple[Generate, InferParams, int, float]:
    """``generate(prompt, n)`` on the adapter or GGUF file of ``args`` (infer: settings of
    ``--params``), the settings, the number of samples and the seconds loading took."""
    from text2sql.commands.predict import model_path
    from text2sql.inference.predict import load_generator
    from text2sql.params import InferParams, load_params

    infer = load_params("infer", args.params) if args.params.is_file() else InferParams()
    if args.backend:
        infer = infer.model_copy(update={"backend": args.backend})
    n = args.num_samples or infer.num_samples
    max_new_tokens = args.max_new_tokens or infer.max_new_tokens
    t0 = time.perf_counter()
    generator, _ = load_generator(model_path(args, infer.backend), infer)
    load_s = time.perf_counter() - t0

    def generate(prompts: list[list[dict[str, str]]], num_samples: int) -> Any:
        return generator(prompts, batch_size=max(num_samples, 1) * len(prompts),
                         max_new_tokens=max_new_tokens, num_samples=num_samples,
                         temperature=infer.temperature, seed=infer.seed, progress=False)

    return generate, infer, n, load_s


def refusal(kind: str, message: str) -> str:
    """Why ``check_read_only_query`` turned the SQL down, in a user's words."""
    import re

    if kind == "empty_prediction":
        return "the model wrote no SQL"
    if kind == "parse_error":
        return f"the SQL does not parse ({message})"
    statement = re.search(r"not (\w+)$", message)
    if statement:
        word = statement.group(1)
        return f"the SQL is {'an' if word[0] in 'AEIOU' else 'a'} {word} statement"
    count = re.search(r"got (\d+)", message)
    if count:
        return f"the SQL holds {count.group(1)} statements"
    return message


def indent(sql: str) -> str:
    return sql.strip().replace("\n", "\n  ")


def format_table(headers: list[str], rows: list[tuple], width: int = 80) -> str:
    """Rows as a plain-text table (NULL shown as NULL); a value longer than ``width``
    characters is cut and marked (``abc… [+999 chars]``), a BLOB shown by its size."""
    from tabulate import tabulate

    from text2sql.sql.sqlite import shorten

    shown = [["NULL" if v is None else shorten(v, width) if isinstance(v, (str, bytes)) else v
              for v in row] for row in rows]
    return tabulate(shown, headers=headers, tablefmt="simple", disable_numparse=True) \
        if headers else "(no columns)"
