"""The model stack's known harmless import messages are dropped; genuine warnings still show."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from text2sql.runtime.quiet import KNOWN_HARMLESS, DropKnownHarmless, quiet_known_warnings

PYTREE = "is an Enum subclass and is now natively supported by torch.compile"
GEMM = "Failed to load CPU gemm_4bit_forward from kernels-community"

# What a stage does: the filters first, then the libraries it loads a model with.
IMPORT_STACK = """
import importlib.util
if importlib.util.find_spec("unsloth") is not None:
    try:
        import unsloth  # first, as in text2sql.training.sft
    except Exception:
        pass
import bitsandbytes, peft, transformers, trl
from transformers import AutoModelForCausalLM
from peft import PeftModel
"""
GENUINE = """
import logging, warnings
logging.getLogger("torch.utils._pytree").warning("genuine: a pytree warning")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: genuine: a broken kernel")
warnings.warn("genuine: a library warning")
"""
QUIET = "from text2sql.runtime.quiet import quiet_known_warnings\nquiet_known_warnings()\n"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_only_the_known_messages_are_dropped():
    quiet_known_warnings()
    quiet_known_warnings()  # idempotent: one filter per logger
    for name, _ in KNOWN_HARMLESS:
        filters = logging.getLogger(name).filters
        assert sum(isinstance(f, DropKnownHarmless) for f in filters) == 1
    pytree, ops = (logging.getLogger(name) for name, _ in KNOWN_HARMLESS)
    collect = Collect()
    # a library imported by an earlier test may have raised these loggers' levels or
    # disabled them (Unsloth does): the filters are what is checked here, so reset both
    saved = [(lg, lg.level, lg.disabled) for lg in (pytree, ops)]
    for lg in (pytree, ops):
        lg.setLevel(logging.WARNING)
        lg.disabled = False
    pytree.addHandler(collect)
    ops.addHandler(collect)
    try:
        pytree.warning("%s " + PYTREE + " as an opaque value type.", "<enum 'KernelPreference'>")
        ops.warning(GEMM + ": %s. Please make sure ...",
                    ModuleNotFoundError("No module named 'kernels'"))
        pytree.warning("<class 'Foo'> cannot be registered as a pytree")
        ops.warning(GEMM + ": %s.", RuntimeError("CUDA driver too old"))
        logging.getLogger("bitsandbytes").warning("No module named 'kernels'")
    finally:
        pytree.removeHandler(collect)
        ops.removeHandler(collect)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled
    assert collect.messages == ["<class 'Foo'> cannot be registered as a pytree",
                                GEMM + ": CUDA driver too old."]
    with pytest.warns(UserWarning, match="still shows"):
        warnings.warn("still shows")


@pytest.mark.slow
def test_importing_the_model_stack_prints_no_known_harmless_line():
    """Two real interpreters import the stack: without the filters the lines appear,
    with them they do not, and genuine warnings from the same loggers still do."""
    def start(code: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    loud = start("import bitsandbytes, peft, transformers")
    quiet = start(QUIET + IMPORT_STACK + GENUINE)
    loud_out, _ = loud.communicate(timeout=300)
    quiet_out, _ = quiet.communicate(timeout=300)
    assert loud.returncode == 0, loud_out[-3000:]
    assert quiet.returncode == 0, quiet_out[-3000:]

    assert PYTREE in loud_out, f"the stack no longer logs the pytree notice:\n{loud_out[-3000:]}"
    assert PYTREE not in quiet_out, quiet_out[-3000:]
    assert "No module named 'kernels'" not in quiet_out, quiet_out[-3000:]
    for genuine in ("genuine: a pytree warning", "genuine: a broken kernel",
                    "genuine: a library warning"):
        assert genuine in quiet_out, f"{genuine!r} was hidden:\n{quiet_out[-3000:]}"
