"""Drop the known harmless messages the model stack logs on import; every other one still shows.

Importing torch's stack here (transformers, peft, unsloth) logs, on every run:

- ``torch.utils._pytree``: ``<enum 'KernelPreference'> is an Enum subclass and is now natively
  supported by torch.compile ...`` (torchao still registers its enums as pytree constants;
  a deprecation notice for torchao's authors, not for us);
- ``bitsandbytes.backends.cpu.ops``: ``Failed to load CPU gemm_4bit_forward from
  kernels-community: No module named 'kernels'`` (on CPUs with AVX512-BF16; bitsandbytes
  falls back to its own kernel, and 4-bit loading is for CUDA here anyway).

Both go through :mod:`logging` on those two loggers, so a filter on each logger drops exactly
these messages and lets any other record, from the same loggers included, through.
Call :func:`quiet_known_warnings` before the heavy imports; it is cheap (no import of torch)
and idempotent.
"""

from __future__ import annotations

import logging

# (logger name, text every harmless message of that logger contains)
KNOWN_HARMLESS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("torch.utils._pytree",
     ("is an Enum subclass and is now natively supported by torch.compile",)),
    ("bitsandbytes.backends.cpu.ops",
     ("Failed to load CPU gemm_4bit_forward from kernels-community",
      "No module named 'kernels'")),
)


class DropKnownHarmless(logging.Filter):
    """Rejects a record whose message contains every one of ``texts``."""

    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not all(text in message for text in self.texts)


def quiet_known_warnings() -> None:
    """Install the filters of :data:`KNOWN_HARMLESS` (once) on their loggers."""
    for name, texts in KNOWN_HARMLESS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropKnownHarmless) and f.texts == texts for f in logger.filters):
            logger.addFilter(DropKnownHarmless(texts))
