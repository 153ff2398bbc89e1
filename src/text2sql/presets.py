"""Presets: train settings for real models, written into ``params.yaml`` in one command.

A preset is a YAML file in ``presets/`` holding a ``train:`` section and, under
``gpu_memory:``, the batch settings that fit a card of 24 or 80 GB. Applying one merges
both into the ``train:`` section of ``params.yaml`` with DVC's own YAML writer (the one
``dvc exp run -S`` uses), so comments and layout stay, and validates the result first:
a preset that would give invalid params writes nothing.

    text2sql preset qwen2.5-coder-1.5b --gpu-memory 80
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from text2sql.io import DataError
from text2sql.params import PARAMS_FILE, TrainParams, parse_section

PRESETS_DIR = Path("presets")
GPU_MEMORY_GB = (24, 80)


def preset_names(presets_dir: Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in presets_dir.glob("*.yaml"))


def preset_train_values(name: str, gpu_memory: int,
                        presets_dir: Path = PRESETS_DIR) -> dict[str, Any]:
    """The ``train:`` values of preset ``name`` for a card with ``gpu_memory`` GB."""
    path = presets_dir / f"{name}.yaml"
    if not path.is_file():
        raise DataError(f"{path}: no such preset; presets: {', '.join(preset_names(presets_dir))}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"train", "gpu_memory"}
    if unknown or not isinstance(data.get("train"), dict):
        raise DataError(f"{path}: a preset holds a train: section and gpu_memory: "
                        f"(found {sorted(data)})")
    by_memory = data.get("gpu_memory") or {}
    if gpu_memory not in by_memory:
        raise DataError(f"{path}: no settings for {gpu_memory} GB (gpu_memory: has "
                        f"{sorted(by_memory)})")
    return merge(data["train"], by_memory[gpu_memory])


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` on top, nested sections merged key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(name: str, gpu_memory: int, params_file: Path = PARAMS_FILE,
                 presets_dir: Path = PRESETS_DIR) -> TrainParams:
    """Write preset ``name`` into the ``train:`` section of ``params_file``; the new params."""
    from dvc.utils.serialize import modify_yaml

    values = preset_train_values(name, gpu_memory, presets_dir)
    with modify_yaml(params_file) as data:
        train = data.setdefault("train", {})
        # Validated before anything is written: an exception here leaves the file as it was.
        params = parse_section(TrainParams, merge(_plain(train), values), "train",
                               f"{params_file} with preset {name}")
        _update_in_place(train, values)
    return params


def _plain(value: Any) -> Any:
    """ruamel's commented maps and sequences as plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _update_in_place(target: Any, values: dict[str, Any]) -> None:
    """Set ``values`` in the round-trip map ``target``, keeping its comments and order."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _update_in_place(target[key], value)
        else:
            target[key] = value
