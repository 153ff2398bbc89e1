"""check: validate all of params.yaml before any other stage runs.

    dvc repro                                # runs first, whenever params.yaml changes
    python stages/check.py                   # the same, outside DVC

DVC deletes a stage's outputs just before it runs the stage's command, so a mistyped
param (`dvc exp run -S +train.epoch=3`) found by the train stage itself would cost the
adapter of the last good run. Every other stage depends on this stage's output, so DVC
runs this check first and stops here, with all previous outputs untouched.

Writes ``data/checked/params.txt``: always the same text, so that a change of params
reruns this check without, by itself, rerunning the stages downstream.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

from text2sql.io import DataError, write_text
from text2sql.params import PARAMS_FILE, check_all_params

OUT_FILE = Path("data/checked/params.txt")
MARKER = ("params.yaml passed stages/check.py. The other stages depend on this file, so that "
          "DVC checks every param before it deletes any stage's outputs.\n")


def main(params_file: Path = PARAMS_FILE) -> None:
    checked = check_all_params(params_file)
    write_text(OUT_FILE, MARKER)
    print(f"check: {params_file} is valid ({', '.join(checked)})")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main()
    except DataError as e:
        sys.exit(f"check: error: {e}\n(nothing was run or deleted; fix params.yaml, or restore "
                 "the last good state: see docs/reproducibility.md, 'When an experiment fails')")
