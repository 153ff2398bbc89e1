"""Training checkpoints: which one a killed run may resume from (train and align).

A checkpoint is resumed only when it was made with the same params and training data, and
whatever else a stage names as its inputs (align: the SFT adapter and the databases),
recorded in ``fingerprint.json`` beside the checkpoints; others are removed. A stage may
also keep a slow intermediate result in the folder (align: DPO's sampled pairs) with
:func:`write_cached`, read back only under the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from text2sql.io import write_json

FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(params: BaseModel, rows: Sequence[dict[str, Any]],
                inputs: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the params, the training data and
    ``inputs`` (other inputs of the run, by name: their hashes)."""
    data = hashlib.sha256()
    for row in rows:
        data.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return {"params": hashlib.sha256(params.model_dump_json().encode()).hexdigest(),
            "data": data.hexdigest(), **(inputs or {})}


def checkpoint_step(checkpoint: Path) -> int:
    """The global step of ``checkpoint-<step>`` (-1 for a folder not named so)."""
    step = checkpoint.name.split("-")[-1]
    return int(step) if step.isdigit() else -1


def find_resumable_checkpoint(checkpoint_dir: Path, expected: dict[str, str],
                              stage: str = "train") -> Path | None:
    """The last checkpoint in ``checkpoint_dir`` if it was made with the same fingerprint.

    What another run left (checkpoints, cached results) is removed with a message when it
    was made with other params, data or inputs: never resumed.
    """
    marker = checkpoint_dir / FINGERPRINT_FILE
    if not any(e.name != FINGERPRINT_FILE for e in checkpoint_dir.iterdir()):
        return None
    found = json.loads(marker.read_text()) if marker.is_file() else {}
    if found != expected:
        changed = [k for k in expected if found.get(k) != expected[k]] or ["fingerprint missing"]
        print(f"{stage}: not resuming from {checkpoint_dir}: it was made with different "
              f"{' and '.join(changed)}; starting from scratch")
        remove_checkpoints(checkpoint_dir)
        return None
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=checkpoint_step)
    if not checkpoints:
        return None
    last = checkpoints[-1]
    if not (last / "trainer_state.json").is_file():  # killed while writing it
        shutil.rmtree(last)
        return find_resumable_checkpoint(checkpoint_dir, expected, stage)
    return last


def prepare_checkpoints(checkpoint_dir: Path, params: BaseModel, rows: Sequence[dict[str, Any]],
                        *, inputs: Mapping[str, str] | None = None, stage: str = "train"
                        ) -> Path | None:
    """Create ``checkpoint_dir``, mark it with this run's fingerprint; the checkpoint to resume."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(params, rows, inputs)
    resume_from = find_resumable_checkpoint(checkpoint_dir, expected, stage)
    (checkpoint_dir / FINGERPRINT_FILE).write_text(json.dumps(expected, indent=1))
    if resume_from is not None:
        print(f"{stage}: resuming from {resume_from}")
    return resume_from


def write_cached(checkpoint_dir: Path, name: str, value: Any) -> None:
    """Keep ``value`` (JSON) in ``checkpoint_dir/name`` for a resumed run, atomically, under
    the folder's fingerprint (written first by :func:`prepare_checkpoints`)."""
    marker = json.loads((checkpoint_dir / FINGERPRINT_FILE).read_text())
    write_json(checkpoint_dir / name, {"fingerprint": marker, "value": value})


def read_cached(checkpoint_dir: Path, name: str) -> Any | None:
    """What :func:`write_cached` kept, when it was kept under the folder's fingerprint."""
    path, marker = checkpoint_dir / name, checkpoint_dir / FINGERPRINT_FILE
    if not (path.is_file() and marker.is_file()):
        return None
    cached = json.loads(path.read_text(encoding="utf-8"))
    return cached["value"] if cached.get("fingerprint") == json.loads(marker.read_text()) else None


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """Training finished (or what is here cannot be resumed): only the fingerprint stays.

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
