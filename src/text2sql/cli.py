"""The ``text2sql`` console command: ask a database, predict and evaluate outside DVC.

Each subcommand lives in ``text2sql.commands.<name>`` and exposes
``register(subparsers)``; heavy libraries are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import io
import sys

from text2sql import __version__
from text2sql.io import DataError
from text2sql.runtime.quiet import quiet_known_warnings

COMMANDS = ("ask", "chat", "predict", "evaluate", "report", "serve", "mcp", "preset")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="text2sql",
        description="Translate questions into SQL with a fine-tuned small language model, "
                    "and score SQL predictions by executing them read-only.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"text2sql.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"text2sql.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def enable_faulthandler() -> None:
    """A native crash (torch, llama.cpp, SQLite) prints every thread's stack to stderr; where
    ``sys.stderr`` has no file descriptor (a test capturing it), the process's own fd 2."""
    if faulthandler.is_enabled():
        return
    try:
        faulthandler.enable()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        if sys.__stderr__ is not None:
            faulthandler.enable(file=sys.__stderr__)


def main(argv: list[str] | None = None) -> int:
    enable_faulthandler()
    quiet_known_warnings()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, FileNotFoundError) as e:
        print(f"text2sql {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
