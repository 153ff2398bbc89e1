"""Atomic file output and line-numbered JSON input.

Every output of a stage is written to a temporary sibling first and renamed into
place, so a run that fails halfway leaves the previous outputs intact.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data: the message names the file, line or key and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only on success.

    For a directory the old directory is replaced as a whole; on failure the
    temporary one is removed and the old one is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    # mkstemp/mkdtemp create owner-only entries; give outputs the usual permissions.
    tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
    try:
        yield tmp
        if is_dir:
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# Fields that measure this run on this machine (time, throughput, memory), not its result:
# ``wall_s``, ``tokens_per_s``, ``peak_memory_mb``, a row's ``seconds``. They are kept out of
# the DVC-tracked outputs, so that the same code, data and params give the same dvc.lock.
RUNTIME_FIELD = re.compile(r"(_s|seconds|_mb|timestamp)$")
RUNTIME_DIR = "runtime"  # beside each metrics file: metrics/runtime/<stage>.json (git-ignored)


def without_runtime(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` minus its top-level runtime fields (see :data:`RUNTIME_FIELD`)."""
    return {k: v for k, v in record.items() if not RUNTIME_FIELD.search(k)}


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path | None:
    """Write a stage's results to ``path`` and its runtime fields beside it, in ``runtime/``.

    ``metrics/train.json`` gets what the same inputs always give (loss, counts, accuracy);
    ``metrics/runtime/train.json`` gets wall time, throughput and memory, which differ from
    run to run and machine to machine. Returns the runtime file, if there was anything for it.
    """
    path = Path(path)
    write_json(path, without_runtime(metrics))
    runtime = {k: v for k, v in metrics.items() if RUNTIME_FIELD.search(k)}
    if not runtime:
        return None
    runtime_file = path.parent / RUNTIME_DIR / path.name
    write_json(runtime_file, runtime)
    return runtime_file


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; return the number of lines."""
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte {e.start}") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(line_number, object)`` pairs from a JSONL file, skipping blank lines.

    The file is read line by line, never whole, so it may be larger than memory.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    # Binary lines, decoded one by one: a text-mode reader decodes ahead and would
    # report a bad byte on the wrong line.
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


JSON_CHUNK = 1 << 20  # bytes read at a time by iter_json_array
MAX_JSON_ITEM = 64 << 20  # the largest element iter_json_array accepts, in characters
_JSON_SPACE = " \t\n\r"


def iter_json_array(path: str | Path, chunk: int = JSON_CHUNK, max_item: int = MAX_JSON_ITEM
                    ) -> Iterator[tuple[int, int, Any]]:
    """Stream ``(index, line_number, element)`` of a file holding one JSON array.

    The file is read ``chunk`` bytes at a time and each element decoded by the standard
    library's C decoder as soon as it is whole, so memory holds one chunk plus the element
    being read (at most ``max_item`` characters), never the array. Errors name the file,
    the line and the element.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, read_bytes, eof = "", 0, 0, False
    line, counted = 1, 0  # the line number at buf[counted]: lines are counted once, onwards

    def line_at(p: int) -> int:
        nonlocal line, counted
        if p < counted:
            return line - buf.count("\n", p, counted)
        line += buf.count("\n", counted, p)
        counted = p
        return line

    with path.open("rb") as f:
        def more() -> bool:
            """Append the next chunk to ``buf`` (dropping what is consumed); False at EOF."""
            nonlocal buf, pos, read_bytes, eof, counted
            if eof:
                return False
            raw = f.read(chunk)
            try:
                text = utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not valid UTF-8 at byte {read_bytes + e.start}") from None
            if not raw:  # positions in buf stay valid for the caller's message
                eof = True
                return False
            read_bytes += len(raw)
            line_at(pos)
            buf, pos, counted = buf[pos:] + text, 0, 0
            return True

        def skip_space() -> str:
            """The next non-blank character (reading on as needed), or "" at the end."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _JSON_SPACE:
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        if skip_space() != "[":
            raise DataError(f"{path}:{line_at(pos)}: expected a JSON array of examples "
                            "([{...}, {...}])")
        pos += 1
        index = 0
        while True:
            c = skip_space()
            if c == "]" and index == 0:
                pos += 1
                break
            if index > 0:
                if c == "]":
                    pos += 1
                    break
                if c != ",":
                    raise DataError(f"{path}:{line_at(pos)}: expected ',' or ']' after element "
                                    f"{index - 1}, got {c!r}" if c else
                                    f"{path}: the array ends early, after element {index - 1} "
                                    "(a truncated file?)")
                pos += 1
                skip_space()
            while True:
                try:
                    element, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as e:
                    # A cut element fails at the buffer's end, or in a string still open
                    # there; an error well before it is in the file.
                    cut = e.pos >= len(buf) - 16 or e.msg.startswith("Unterminated string")
                    if not cut or len(buf) - pos > max_item or not more():
                        where = (f"{path}:{line_at(e.pos)}" if e.pos < len(buf) else
                                 f"{path}: at the end")
                        raise DataError(f"{where}: element {index}: invalid JSON ({e.msg})"
                                        + (f", or larger than {max_item:,} characters"
                                           if len(buf) - pos > max_item else "")) from None
                    continue
                if end < len(buf) or eof:
                    break
                more()  # a number cut by the chunk's end would decode: make sure it ended
            yield index, line_at(pos), element
            pos = end
            index += 1
        if skip_space():
            raise DataError(f"{path}:{line_at(pos)}: text after the end of the JSON array")
