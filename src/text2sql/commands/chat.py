"""``text2sql chat``: a conversation with a database; follow-up questions see the earlier ones."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from text2sql.commands import add_adapter_argument, resolve_adapter
from text2sql.commands.ask import (
    add_revise_argument,
    add_run_arguments,
    check_limits_and_schema,
    indent,
    limits_of,
    revise_rounds_of,
    show_answer,
    show_revisions,
)

if TYPE_CHECKING:
    from text2sql.ask.database import Database
    from text2sql.params import InferParams, PrepareParams
    from text2sql.sql.schema import Schema

DESCRIPTION = """\
Talk to a SQLite file, a PostgreSQL database, a DuckDB file or a folder of CSV
and Parquet files: ask a question, then follow up ("only those from
Avonlea", "how many is that?"). Each question's prompt holds the conversation so
far, as the prepare stage builds it for multi-turn training data: the earlier
questions and the SQL the model wrote for them, newest kept (at most --history
turns and prepare.max_history_tokens tokens), with the schema linked to every
question of the conversation.

Each answer shows the linked tables, the SQL and its result table (with
--revise-rounds N, a query that fails or returns no rows is first asked again,
the database's error in a follow-up turn, up to N times). The SQL runs
exactly as in `text2sql ask`: read-only, a single SELECT/WITH query, with
--timeout, --max-rows and --max-bytes (on PostgreSQL: translated from SQLite's
dialect, in a read-only transaction that is rolled back; on DuckDB: translated,
the file opened read-only, DuckDB's memory limit, no file access).

Commands: /sql shows the last query, /reset starts a new conversation, /help,
/quit (or end of input). Questions are read one per line, from the terminal or
from a pipe (`printf 'q1\\nq2\\n' | text2sql chat --db FILE`).
"""

EPILOG = """\
examples:
  text2sql chat --db data/sample/database/school/school.sqlite
  printf 'Which students are in year 2?\\nOnly those from Avonlea.\\n' | text2sql chat --db school.sqlite

exit status: 0 at the end of the conversation (a failed or refused query is reported
and the conversation goes on); 2 bad arguments or files.
"""

HELP = "commands: /sql (last query), /reset (new conversation), /help, /quit"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "chat", help="a conversation with any SQLite file: follow-up questions, SQL and tables",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True, metavar="FILE|DIR|URL",
                   help="the SQLite file, PostgreSQL URL (postgresql://user@host/db), DuckDB "
                        "file (.duckdb), or folder or glob of CSV/Parquet files (one table per "
                        "file) to talk to (never modified)")
    p.add_argument("--schemas", default="public", metavar="NAMES",
                   help="PostgreSQL: comma-separated schemas to read (default: %(default)s)")
    p.add_argument("--allow-writable-role", action="store_true",
                   help="PostgreSQL: connect even as a role that can write or is a superuser "
                        "(refused otherwise; see docs/postgresql.md)")
    add_adapter_argument(p)
    p.add_argument("--history", type=int, default=None, metavar="N",
                   help="earlier turns kept in the prompt (default: prepare.max_history_turns)")
    add_run_arguments(p)
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="longest answer in tokens (default: infer.max_new_tokens)")
    add_revise_argument(p)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                   help="prepare: and infer: settings to use when the file exists "
                        "(default: %(default)s)")
    p.set_defaults(func=run)


class Conversation:
    """The turns so far (question and the SQL the model wrote), at most ``limit`` of them."""

    def __init__(self, limit: int):
        from text2sql.data.sources import Turn

        self._turn = Turn
        self.turns: deque = deque(maxlen=max(limit, 0))  # the oldest turn falls out first
        self.last_sql: str | None = None
        self.asked = 0  # questions in this conversation

    def add(self, question: str, sql: str) -> None:
        self.last_sql = sql
        self.asked += 1
        if sql.strip():  # an empty answer would teach the next prompt nothing
            self.turns.append(self._turn(question, sql))

    def reset(self) -> None:
        self.turns.clear()
        self.last_sql = None
        self.asked = 0


def read_questions(stdin: TextIO, out: TextIO) -> Any:
    """Lines from ``stdin``; on a terminal with a ``> `` prompt (and line editing)."""
    if stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:  # not on every platform
            pass
        while True:
            try:
                yield input("> ")
            except EOFError:
                print(file=out)
                return
    else:
        yield from (line.rstrip("\n") for line in stdin)


def run(args: argparse.Namespace) -> int:
    from text2sql.ask.questions import prepare_settings
    from text2sql.inference.hf import load_for_inference
    from text2sql.io import DataError
    from text2sql.params import InferParams, load_params

    db, schema = check_limits_and_schema(args)
    if args.history is not None and args.history < 0:
        raise DataError(f"--history {args.history}: give 0 or more turns")
    settings = prepare_settings(args.params)
    if args.history is not None:
        settings = settings.model_copy(update={"max_history_turns": args.history})
    infer = load_params("infer", args.params) if args.params.is_file() else InferParams()
    max_new_tokens = args.max_new_tokens or infer.max_new_tokens
    out = sys.stdout
    t0 = time.perf_counter()
    adapter = resolve_adapter(args.adapter, "text2sql chat")
    model, tokenizer = load_for_inference(adapter, load_in_4bit=infer.load_in_4bit)
    print(f"chat with {db} (model loaded in {time.perf_counter() - t0:.1f} s; "
          f"{HELP})", file=out, flush=True)
    conversation = Conversation(settings.max_history_turns)
    try:
        converse(conversation, args, db, schema, settings, model, tokenizer, infer,
                 max_new_tokens, out)
    except KeyboardInterrupt:  # Ctrl-C while the model writes or a query runs: stop quietly
        print(file=out)
        return 130
    return 0


def converse(conversation: Conversation, args: argparse.Namespace, db: Database,
             schema: Schema, settings: PrepareParams, model: Any, tokenizer: Any,
             infer: InferParams, max_new_tokens: int, out: TextIO) -> None:
    """Answer each line of standard input (a question or a command) until the input ends."""
    from text2sql.ask.pipeline import answer_question
    from text2sql.inference.hf import generate as generate_texts

    def generate(prompts: list[list[dict[str, str]]], num_samples: int) -> Any:
        return generate_texts(model, tokenizer, prompts, batch_size=len(prompts) * num_samples,
                              max_new_tokens=max_new_tokens, num_samples=num_samples,
                              temperature=infer.temperature, seed=infer.seed, progress=False)

    for line in read_questions(sys.stdin, out):
        question = line.strip()
        if not question:
            continue
        if question.startswith("/"):
            command = question.split()[0].lower()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                conversation.reset()
                print("(new conversation)", file=out)
            elif command == "/sql":
                last = conversation.last_sql
                print("(no query yet)" if last is None else indent(last or "(the model wrote "
                                                                       "no SQL)"), file=out)
            elif command == "/help":
                print(HELP, file=out)
            else:
                print(f"unknown command {command!r}; {HELP}", file=out)
            out.flush()
            continue
        answer = answer_question(question, db, schema, generate, settings=settings,
                                 limits=limits_of(args), dialects=[db.dialect, args.dialect],
                                 history=list(conversation.turns),
                                 revise_rounds=revise_rounds_of(args, infer))
        sql = answer.sql
        print(f"tables: {', '.join(answer.tables or [])}", file=out)
        show_revisions(answer, out)
        print(f"SQL (turn {conversation.asked + 1}, generated in {answer.generate_s or 0.0:.1f} "
              f"s):\n  {indent(sql or '(the model wrote no SQL)')}", file=out)
        show_answer(answer, args, out)
        conversation.add(question, sql)
        out.flush()
        sys.stderr.flush()
