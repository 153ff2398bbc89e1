"""The ``text2sql`` subcommands, and the adapter they run unless told otherwise.

By default a command runs the model whose metrics the pipeline reported: the align
stage's output ``models/aligned`` (with ``align.method: none`` a copy of the SFT
adapter), not the train stage's ``models/adapter``, so ``dvc exp run -S
align.method=dpo`` changes what ``text2sql ask`` answers with as it changes the scores.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DEFAULT_ADAPTER = Path("models/aligned")  # the align stage's output: what infer evaluates
TRAINED_ADAPTER = Path("models/adapter")  # the train stage's output, before align
ADAPTER_CONFIG = "adapter_config.json"


def add_adapter_argument(p: Any) -> None:
    """``--adapter DIR``, left ``None`` unless given (see :func:`resolve_adapter`)."""
    p.add_argument("--adapter", type=Path, default=None, metavar="DIR",
                   help=f"trained adapter folder (default: {DEFAULT_ADAPTER}, the align stage's "
                        f"output, the model the pipeline evaluates; {TRAINED_ADAPTER} when only "
                        "the train stage has run)")


def resolve_adapter(given: Path | None, command: str, *, also: str = "") -> Path:
    """The adapter a command runs: ``given`` (``--adapter``) as it is, else
    :data:`DEFAULT_ADAPTER`, else :data:`TRAINED_ADAPTER` with a one-line note on stderr
    (a user who ran only ``dvc repro train``). Neither trained: an error naming both and
    what to run; ``also`` adds another way out (``serve --no-model``)."""
    from text2sql.io import DataError

    if given is not None:
        return given
    if (DEFAULT_ADAPTER / ADAPTER_CONFIG).is_file():
        return DEFAULT_ADAPTER
    if (TRAINED_ADAPTER / ADAPTER_CONFIG).is_file():
        print(f"{command}: {DEFAULT_ADAPTER} not found, using {TRAINED_ADAPTER} (the train "
              "stage's adapter, before align; `dvc repro align` makes the aligned one)",
              file=sys.stderr)
        return TRAINED_ADAPTER
    raise DataError(f"no trained adapter: neither {DEFAULT_ADAPTER} (the align stage's output) "
                    f"nor {TRAINED_ADAPTER} (the train stage's) has {ADAPTER_CONFIG}; run "
                    f"`dvc repro align` (it trains first) or `dvc pull`, or pass --adapter DIR"
                    + (f", or {also}" if also else ""))
