"""Native code in a child process: its crash becomes an error here, not the end of the process.

A segmentation fault inside a C library (llama.cpp) kills the whole Python process: a stage
with outputs half-made, a test run with every later test lost, a server with its clients. So
such code runs in a child Python process, and this process talks to it over a pipe:

    with ChildWorker("text2sql.inference.llama_cpp:LoadedGGUF", what="llama.cpp on m.gguf (q8_0)",
                     path="m.gguf") as child:
        generations = child.call("generate", prompts, max_new_tokens=128)

The child calls ``factory(**kwargs)`` (a ``module:name`` it imports) once, then the methods
asked for on what it returned; arguments and results travel pickled (the same code on both
ends: nothing untrusted crosses). If the child dies, by a signal or an exit, the call raises
:class:`NativeCrash`, which names what was running and the signal; the child's native stack is
on stderr (``faulthandler`` is on there). An exception raised in the child is raised again
here: a :class:`~text2sql.io.DataError` as one (same message), anything else as a
``RuntimeError`` carrying the child's traceback.

The child is a fresh interpreter (``python -m text2sql.runtime.native``), not a fork: this
process may hold OpenMP and torch threads, which a forked child inherits broken. Its standard
output goes to this process's standard error, so whatever the library prints never mixes
into a command's output.
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import pickle
import signal
import subprocess
import sys
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any

from text2sql.io import DataError


class NativeCrash(DataError):
    """The child process died while it ran native code."""


def describe_exit(returncode: int) -> str:
    """``killed by signal SIGSEGV (Segmentation fault)`` or ``exited with status 3``."""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"killed by signal {-returncode}"
        return f"killed by signal {sig.name} ({signal.strsignal(sig) or sig.name})"
    return f"exited with status {returncode}"


class ChildWorker:
    """``factory(**kwargs)`` built in a child process; :meth:`call` runs its methods there.

    ``what`` names the work in errors, e.g. ``llama.cpp on models/export/model-q8_0.gguf
    (q8_0)``. Building the object is the first call: a crash while loading is reported as such.
    ``env``: variables set for the child on top of this process's.
    """

    def __init__(self, factory: str, *, what: str, env: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        self.what = what
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-m", "text2sql.runtime.native",
                 str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {}), "PYTHONFAULTHANDLER": "1"})
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._finalizer = weakref.finalize(self, _shut_down, self._proc, self._send, self._recv)
        self._request(("__init__", factory, kwargs), doing="loading")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``obj.method(*args, **kwargs)`` in the child; its result (or its exception)."""
        return self._request((method, args, kwargs), doing=f"running {method}")

    def close(self) -> None:
        """Ask the child to exit, and wait for it (killed if it does not within 10 s)."""
        self._finalizer()

    def __enter__(self) -> ChildWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, message: tuple[Any, ...], *, doing: str) -> Any:
        if not self._finalizer.alive:
            raise RuntimeError(f"{self.what}: the child process was closed")
        try:
            self._send.send(message)
            status, payload = self._recv.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            raise self._crashed(doing) from None
        if status == "ok":
            return payload
        kind, text, child_traceback = payload
        if kind == "DataError":
            raise DataError(text)
        raise RuntimeError(f"{self.what}: {text}\n(in the child process:)\n{child_traceback}")

    def _crashed(self, doing: str) -> NativeCrash:
        try:
            returncode = self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            returncode = self._proc.wait()
        self._finalizer()
        return NativeCrash(
            f"{self.what}: the child process {self._proc.pid} {describe_exit(returncode)} "
            f"while {doing}. Its native stack trace is printed above (faulthandler). Nothing "
            "written so far was changed: outputs are only replaced when a run completes. If it "
            "is llama.cpp, check that llama-cpp-python is the project's portable build "
            "(uv sync --reinstall-package llama-cpp-python; docs/export.md, 'llama.cpp build').")


def _shut_down(proc: subprocess.Popen[bytes], send: Connection, recv: Connection) -> None:
    try:
        send.send(("__exit__", (), {}))
    except (OSError, ValueError):
        pass
    for conn in (send, recv):
        conn.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _resolve(factory: str) -> Any:
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)


def serve(recv: Connection, send: Connection) -> None:
    """The child's loop: build the object, then answer calls until told to exit (or EOF)."""
    obj: Any = None
    while True:
        try:
            method, args, kwargs = recv.recv()
        except EOFError:
            return
        if method == "__exit__":
            return
        try:
            if method == "__init__":
                obj = _resolve(args)(**kwargs)
                result = None
            else:
                result = getattr(obj, method)(*args, **kwargs)
            reply: tuple[str, Any] = ("ok", result)
        except Exception as e:  # noqa: BLE001 - every error goes back to the parent
            kind = "DataError" if isinstance(e, DataError) else type(e).__name__
            reply = ("error", (kind, str(e), traceback.format_exc()))
        try:
            send.send(reply)
        except pickle.PicklingError as e:
            send.send(("error", ("PicklingError", str(e), traceback.format_exc())))


def main(argv: list[str]) -> None:
    faulthandler.enable()
    os.dup2(2, 1)  # what native code prints goes to stderr, never into the parent's output
    recv = Connection(int(argv[0]), writable=False)
    send = Connection(int(argv[1]), readable=False)
    serve(recv, send)


if __name__ == "__main__":
    main(sys.argv[1:])
