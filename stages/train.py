"""train: fine-tune LoRA adapters (QLoRA on CUDA with Unsloth) on the prepared examples.

    dvc repro train
    dvc exp run -S train.epochs=3
    dvc exp run -S train.num_processes=4   # 4 GPUs (DDP under torchrun, started for you)
    text2sql preset qwen2.5-coder-1.5b && dvc exp run   # a real model (QLoRA, CUDA)
    python stages/train.py              # the same, outside DVC

Reads the ``train:`` section of params.yaml and ``data/prepared/train.jsonl``. Writes the
adapter, tokenizer, a model card and ``provenance.json`` to ``models/adapter/`` (plus ``base_model/`` for a
built-in model, ``merged/`` with ``train.save_merged``), ``metrics/train.json`` (and the
run's time, throughput and memory in ``metrics/runtime/train.json``, not tracked), and the
loss curve under ``metrics/train_live/``. Checkpoints go to ``checkpoints/train/``: a
killed run, started again with the same params and data, resumes from the last one.
When ``SM_MODEL_DIR`` is set (SageMaker), the adapter is copied there too. With
``train.num_processes`` N > 1 the script runs itself under torchrun (N processes, DDP);
process 0 alone writes these files.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import sys
from pathlib import Path

from text2sql.io import DataError, iter_jsonl, write_metrics
from text2sql.params import TrainParams, load_params

TRAIN_FILE = Path("data/prepared/train.jsonl")
OUT_DIR = Path("models/adapter")
CHECKPOINT_DIR = Path("checkpoints/train")
LIVE_DIR = Path("metrics/train_live")
METRICS = Path("metrics/train.json")


def main(params: TrainParams) -> None:
    from text2sql.runtime.quiet import quiet_known_warnings
    from text2sql.runtime.reproducibility import pin_cpu_numerics, threads_per_process

    quiet_known_warnings()
    pin_cpu_numerics(threads_per_process(params.num_processes))  # before anything imports torch
    from text2sql.runtime.distributed import is_main_process, output_folder, start_processes

    start_processes("train.num_processes", params.num_processes)
    from text2sql.runtime.model_card import write_model_card
    from text2sql.runtime.provenance import PROVENANCE_FILE, write_provenance
    from text2sql.training.sft import train

    rows = [row for _, row in iter_jsonl(TRAIN_FILE)]
    if not rows:
        raise DataError(f"{TRAIN_FILE}: no examples; run the prepare stage first")
    with output_folder(OUT_DIR) as tmp:
        metrics = train(params, rows, tmp, checkpoint_dir=CHECKPOINT_DIR, live_dir=LIVE_DIR)
        if not is_main_process():
            return
        write_model_card(tmp, params, TRAIN_FILE, metrics)
        write_provenance(tmp / PROVENANCE_FILE, [TRAIN_FILE], params=params.model_dump(),
                         stage="train",
                         model={"base_model": params.model_name,
                                "loaded_model": metrics["loaded_model"],
                                "load_in_4bit": params.load_in_4bit,
                                "precision": metrics["precision"]})
    write_metrics(METRICS, metrics)
    if os.environ.get("SM_MODEL_DIR"):
        shutil.copytree(OUT_DIR, os.environ["SM_MODEL_DIR"], dirs_exist_ok=True)
    print(f"train: {metrics['backend']} on {metrics['device']} in {metrics['precision']}, "
          f"{metrics['num_processes']} process(es), global batch {metrics['global_batch_size']}, "
          f"{metrics['steps']} steps, final "
          f"loss {metrics['final_loss']}, {metrics['wall_s']} s -> {OUT_DIR}")


if __name__ == "__main__":
    faulthandler.enable()  # a native crash (torch, llama.cpp, SQLite) prints its stack
    try:
        main(load_params("train"))
    except DataError as e:
        sys.exit(f"train: error: {e}")
