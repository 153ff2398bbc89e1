"""Training checkpoints: which one a killed run may resume from.

A checkpoint is resumed only when it was made with the same params and training data
(recorded in ``fingerprint.json`` beside the checkpoints); others are removed. Light
module: no torch import.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2sql.params import TrainParams

FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(params: TrainParams, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the params and the training data."""
    data = hashlib.sha256()
    for row in rows:
        data.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return {"params": hashlib.sha256(params.model_dump_json().encode()).hexdigest(),
            "data": data.hexdigest()}


def checkpoint_step(checkpoint: Path) -> int:
    """The global step of ``checkpoint-<step>`` (-1 for a folder not named so)."""
    step = checkpoint.name.split("-")[-1]
    return int(step) if step.isdigit() else -1


def find_resumable_checkpoint(checkpoint_dir: Path, expected: dict[str, str]) -> Path | None:
    """The last checkpoint in ``checkpoint_dir`` if it was made with the same params and data.

    Checkpoints from other params or data are removed with a message, never resumed.
    """
    marker = checkpoint_dir / FINGERPRINT_FILE
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step)
    if not checkpoints:
        return None
    found = json.loads(marker.read_text()) if marker.is_file() else {}
    if found != expected:
        changed = [k for k in expected if found.get(k) != expected[k]] or ["fingerprint missing"]
        print(f"train: not resuming from {checkpoint_dir}: it was made with different "
              f"{' and '.join(changed)}; starting from scratch")
        for c in checkpoints:
            shutil.rmtree(c)
        return None
    last = checkpoints[-1]
    if not (last / "trainer_state.json").is_file():  # killed while writing it
        shutil.rmtree(last)
        return find_resumable_checkpoint(checkpoint_dir, expected)
    return last


def prepare_checkpoints(checkpoint_dir: Path, params: TrainParams,
                        rows: Sequence[dict[str, Any]]) -> Path | None:
    """Create ``checkpoint_dir``, mark it with this run's fingerprint; the checkpoint to resume."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(params, rows)
    resume_from = find_resumable_checkpoint(checkpoint_dir, expected)
    (checkpoint_dir / FINGERPRINT_FILE).write_text(json.dumps(expected, indent=1))
    if resume_from is not None:
        print(f"train: resuming from {resume_from}")
    return resume_from


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """Training finished: the adapter is the result now; only the fingerprint stays.

    The trainer also leaves files of its own here (TRL writes a model card whose tags come
    in set order, so it differs from run to run): they go too, so that this folder, a DVC
    output, has the same hash for the same run.
    """
    for entry in checkpoint_dir.iterdir():
        if entry.name == FINGERPRINT_FILE:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
