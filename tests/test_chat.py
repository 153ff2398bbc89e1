"""``text2sql chat``: a conversation in a real pseudo-terminal and from a pipe."""

from __future__ import annotations

import hashlib
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from text2sql.ask.questions import prompt_row, read_schema
from text2sql.cli import main
from text2sql.commands.chat import Conversation
from text2sql.params import PrepareParams

REPO = Path(__file__).resolve().parents[1]
SCHOOL = REPO / "data" / "sample" / "database" / "school" / "school.sqlite"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_conversation_is_bounded_and_feeds_the_next_prompt():
    conversation = Conversation(limit=2)
    for i in range(3):
        conversation.add(f"Which students are in year {i + 1}?",
                         f"SELECT name FROM students WHERE year = {i + 1}")
    conversation.add("And now?", "")  # no SQL: shown by /sql, kept out of the prompt
    assert [t.question for t in conversation.turns] == ["Which students are in year 2?",
                                                        "Which students are in year 3?"]
    assert conversation.last_sql == "" and conversation.asked == 4
    row = prompt_row("How many is that?", SCHOOL, read_schema(SCHOOL), PrepareParams(),
                     history=list(conversation.turns))
    assert row["tables"] == ["students"]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user",
                                                  "assistant", "user"]
    conversation.reset()
    assert not conversation.turns and conversation.last_sql is None and conversation.asked == 0


def test_chat_reads_questions_from_a_pipe(tiny_adapter, monkeypatch, capsys):
    before = digest(SCHOOL)
    read, write = os.pipe()
    os.write(write, b"Which students are in year 2?\n/sql\nHow many is that?\n/reset\n"
                    b"/nope\nCount the students.\n")
    os.close(write)
    with os.fdopen(read) as pipe:
        monkeypatch.setattr(sys, "stdin", pipe)
        code = main(["chat", "--db", str(SCHOOL), "--adapter", str(tiny_adapter),
                     "--params", "/nonexistent.yaml", "--max-new-tokens", "32"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.count("SQL (turn 1,") == 2 and out.count("SQL (turn 2,") == 1
    assert "(new conversation)" in out and "unknown command '/nope'" in out
    assert "> " not in out  # no prompt when the questions come from a pipe
    # each of the three answers is a result table or an explicit failure, never silence
    tables = re.findall(r"^\(\d+ rows?[;)]", out, flags=re.MULTILINE)
    failures = re.findall(r"^text2sql chat: (?:refused|the query failed)", err, flags=re.MULTILINE)
    assert len(tables) + len(failures) == 3, (out, err)
    assert digest(SCHOOL) == before


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while marker not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} within {timeout} s; got:\n{buf.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_chat_in_a_pseudo_terminal(tiny_adapter):
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "text2sql.cli", "chat", "--db", str(SCHOOL), "--adapter",
         str(tiny_adapter), "--params", "/nonexistent.yaml", "--max-new-tokens", "16"],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, close_fds=True)
    os.close(slave)
    try:
        banner = _read_until(master, b"> ", 120)
        assert b"chat with" in banner and b"/reset" in banner
        os.write(master, b"Which students are in year 2?\n")
        first = _read_until(master, b"> ", 60)
        assert b"SQL (turn 1," in first and b"tables: students" in first
        os.write(master, b"How many is that?\n")
        second = _read_until(master, b"> ", 60)
        assert b"SQL (turn 2," in second
        os.write(master, b"/sql\n")
        shown = _read_until(master, b"> ", 10)
        last_sql = second.split(b"SQL (turn 2,")[1].split(b"\n")[1].strip()
        assert last_sql and last_sql in shown
        os.write(master, b"/reset\n")
        assert b"(new conversation)" in _read_until(master, b"> ", 10)
        os.write(master, b"\x04")  # Ctrl-D: end of input ends the conversation
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
