"""A short model card written beside the adapter: what it was trained from, how, and how well."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from text2sql.io import without_runtime, write_text
from text2sql.params import TrainParams


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_model_revision(adapter_dir: Path) -> str:
    """The hub commit of the base model when it came from the hub cache, else ``local``."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        return "unknown"
    base = json.loads(config.read_text()).get("base_model_name_or_path") or ""
    snapshot = Path(base)
    if snapshot.parent.name == "snapshots":  # .../models--org--name/snapshots/<commit>
        return snapshot.name
    return json.loads(config.read_text()).get("revision") or "local"


def write_model_card(adapter_dir: Path, params: TrainParams, train_file: Path,
                     metrics: dict[str, Any]) -> None:
    """``README.md`` in ``adapter_dir`` with base model, revision, params, data hash, metrics."""
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {params.model_name}",
        "tags: [text-to-sql, lora, sqlite]",
        "---",
        "",
        "# Text-to-SQL LoRA adapter",
        "",
        f"- Base model: `{params.model_name}` (revision: {base_model_revision(adapter_dir)})",
        f"- Training data: `{train_file}` (sha256 `{file_sha256(train_file)}`)",
        f"- Loaded for training: `{metrics.get('loaded_model', params.model_name)}` "
        f"(load_in_4bit: {str(params.load_in_4bit).lower()}), computing in "
        f"{metrics.get('precision')}",
        f"- Backend: {metrics.get('backend')} on {metrics.get('device')}",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(params.model_dump(), indent=2),
        "```",
        "",
        "## Training metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        # Timings are left out, so that the same training gives the same bytes.
        *(f"| {k} | {v} |" for k, v in without_runtime(metrics).items()),
        "",
    ]
    if params.model_name.startswith("builtin:"):
        lines += ["The base model is the built-in tiny model: it starts from random weights and "
                  "demonstrates the pipeline, not a model's quality.", ""]
    write_text(adapter_dir / "README.md", "\n".join(lines))


def write_alignment_card(out_dir: Path, sft_dir: Path, method: str, params: dict[str, Any],
                         metrics: dict[str, Any]) -> None:
    """``README.md`` of an aligned adapter: the SFT adapter's card plus how it was aligned."""
    sft_card = sft_dir / "README.md"
    lines = [sft_card.read_text().rstrip() if sft_card.is_file() else "# Text-to-SQL LoRA adapter",
             "",
             f"## Aligned with {method.upper()} (the `align` stage)",
             "",
             "Started from the SFT adapter above; reward: execution match against the gold query.",
             "",
             "```json",
             json.dumps(params, indent=2),
             "```",
             "",
             "| metric | value |",
             "| --- | --- |",
             *(f"| {k} | {v} |" for k, v in without_runtime(metrics).items()),
             ""]
    write_text(out_dir / "README.md", "\n".join(lines))
