"""align: improve the fine-tuned adapter with execution feedback (DPO or GRPO), or pass it through.

    dvc repro align
    dvc exp run -S align.method=dpo        # preference pairs from executed samples
    dvc exp run -S align.method=grpo       # RL on the execution reward
    python stages/align.py                 # the same, outside DVC

Reads the ``align:`` section of params.yaml, ``models/adapter/`` (the SFT adapter),
``data/prepared/train.jsonl`` and the databases its rows name. Writes ``models/aligned/``
(the adapter ``infer`` uses, in the layout of ``models/adapter/``), ``metrics/align.json``
(and its timings in ``metrics/runtime/align.json``, not tracked) and the loss and reward
curves under ``metrics/align_live/``. Checkpoints (and DPO's sampled pairs) go to
``checkpoints/align/``: a killed run, started again with the same params and inputs, resumes
from the last one without sampling again. With ``method: none`` (the default) the adapter is
copied unchanged, in seconds.
"""

from __future__ import annotations

import faulthandler
import shutil
import sys
from pathlib import Path

from text2sql.io import DataError, atomic_path, iter_jsonl, write_metrics
from text2sql.params import AlignParams, load_params

TRAIN_FILE = Path("data/prepared/train.jsonl")
ADAPTER_DIR = Path("models/adapter")
OUT_DIR = Path("models/aligned")
CHECKPOINT_DIR = Path("checkpoints/align")
LIVE_DIR = Path("metrics/align_live")
CURVES_DIR = LIVE_DIR / "plots" / "metrics"
METRICS = Path("metrics/align.json")


def keep_curves_declared() -> None:
    """Give the curves folder (a DVC output, tracked in git) a file when nothing was logged
    (method none, or fewer steps than align.logging_steps): an empty curve, not a missing
    folder that git cannot hold and ``dvc plots show`` reports as an error."""
    CURVES_DIR.mkdir(parents=True, exist_ok=True)
    if not any(CURVES_DIR.glob("*.tsv")):
        (CURVES_DIR / "loss.tsv").write_text("step\tloss\n")


def main(params: AlignParams) -> None:
    from text2sql.training.align import pass_through

    if not (ADAPTER_DIR / "adapter_config.json").is_file():
        raise DataError(f"{ADAPTER_DIR}: no adapter_config.json; run the train stage first")
    if params.method == "none":
        shutil.rmtree(LIVE_DIR, ignore_errors=True)
        shutil.rmtree(CHECKPOINT_DIR, ignore_errors=True)  # nothing to resume: an empty out
        CHECKPOINT_DIR.mkdir(parents=True)
        with atomic_path(OUT_DIR, is_dir=True) as tmp:
            pass_through(ADAPTER_DIR, tmp)
        keep_curves_declared()
        write_metrics(METRICS, {"method": "none"})
        print(f"align: method none, {ADAPTER_DIR} -> {OUT_DIR} unchanged")
        return
    from text2sql.runtime.quiet import quiet_known_warnings
    from text2sql.runtime.reproducibility import pin_cpu_numerics

    quiet_known_warnings()
    pin_cpu_numerics()  # before anything imports torch
    from text2sql.runtime.model_card import write_alignment_card
    from text2sql.runtime.provenance import PROVENANCE_FILE, write_provenance
    from text2sql.training.align import select_questions, train_dpo, train_grpo

    rows = select_questions([row for _, row in iter_jsonl(TRAIN_FILE)], params, str(TRAIN_FILE))
    align = train_dpo if params.method == "dpo" else train_grpo
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        metrics = align(params, rows, ADAPTER_DIR, tmp, checkpoint_dir=CHECKPOINT_DIR,
                        live_dir=LIVE_DIR)
        write_alignment_card(tmp, ADAPTER_DIR, params.method, params.model_dump(), metrics)
        write_provenance(tmp / PROVENANCE_FILE, [TRAIN_FILE, ADAPTER_DIR],
                         params=params.model_dump(), stage="align",
                         model={"sft_adapter": str(ADAPTER_DIR), "method": params.method})
    keep_curves_declared()
    write_metrics(METRICS, metrics)
    print(f"align: {params.method}, {metrics['steps']} steps, final loss {metrics['final_loss']}, "
          f"{metrics['wall_s']} s -> {OUT_DIR}")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("align"))
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"align: error: {e}")
