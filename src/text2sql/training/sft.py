"""Fine-tuning: LoRA/QLoRA with Unsloth (or plain PEFT) and TRL's SFTTrainer, the train loop.

The jobs around it have their own modules: :mod:`text2sql.modeling.lora` (backend, precision,
adapters), :mod:`text2sql.training.masking` (token ids and answer-only labels),
:mod:`text2sql.training.batching` (padding-free or padded batches, token counts),
:mod:`text2sql.training.checkpoints` (resume) and :mod:`text2sql.training.curves` (DVCLive).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.modeling.lora import (
    PER_EXAMPLE_SDPA,
    UNSLOTH_TEMPORARY_DIR,
    has_cuda,
    load_lora_model,
    load_tokenizer,
    resolve_backend,
    trainer_precision_flags,
    unsloth_packed_attention,
)
from text2sql.modeling.tiny import (
    BASE_MODEL_DIR,
    build_tiny_model,
    check_builtin_name,
    is_builtin,
    training_texts,
)
from text2sql.params import TrainParams
from text2sql.runtime.distributed import (
    broadcast_from_main,
    folder_from_main,
    rank_and_size,
    sum_over_processes,
)
from text2sql.training.batching import CountingCollator, TokenCount, make_collator, resolve_batching
from text2sql.training.checkpoints import checkpoint_step, prepare_checkpoints, remove_checkpoints
from text2sql.training.curves import live_callback
from text2sql.training.masking import tokenize_rows

MERGED_DIR = "merged"  # inside the adapter folder, with train.save_merged


def train(params: TrainParams, rows: Sequence[dict[str, Any]], out_dir: Path,
          checkpoint_dir: Path | None = None, live_dir: Path | None = None,
          callbacks: Sequence[Any] = ()) -> dict[str, float | str]:
    """Fine-tune on the prepared ``rows``; save the adapter and tokenizer to ``out_dir``.

    With ``checkpoint_dir``, a checkpoint is written every ``params.checkpoint_steps``
    steps and a run with the same params and data resumes from the last one. With
    ``live_dir``, the training curve is logged there with DVCLive. ``callbacks`` are
    transformers ``TrainerCallback`` objects (the benches time steps with one). Returns
    flat metrics for ``metrics/train.json``.

    In a data-parallel run (``train.num_processes`` > 1, under torchrun) every process
    calls it; process 0 alone writes the adapter, the curve and the checkpoints' bookkeeping,
    the others train on their share of each batch.
    """
    start = time.perf_counter()
    rank, processes = rank_and_size()
    if processes != params.num_processes:
        raise DataError(f"train.num_processes={params.num_processes}, but {processes} process"
                        f"{'es run' if processes > 1 else ' runs'} this training; run it with "
                        "`python stages/train.py`, which starts torchrun for you")
    main = rank == 0
    backend = resolve_backend(params.backend)
    from datasets import Dataset
    from transformers import set_seed

    set_seed(params.seed)
    model_path = params.model_name
    if is_builtin(params.model_name):
        check_builtin_name(params.model_name)
        if main:
            build_tiny_model(training_texts(rows), out_dir / BASE_MODEL_DIR, seed=params.seed,
                             **params.builtin.model_dump())
        model_path = str(folder_from_main(out_dir / BASE_MODEL_DIR))
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "right"  # position ids count from the first token
    examples, dropped = tokenize_rows(tokenizer, rows, params.max_seq_length)
    longest = max(len(e.input_ids) for e in examples)
    loaded = load_lora_model(params, backend, model_path, params.max_seq_length or longest)
    model = loaded.model
    dataset = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                 "labels": [e.labels for e in examples]})
    resume_from = None
    if checkpoint_dir is not None:
        resume_from = broadcast_from_main(
            prepare_checkpoints(checkpoint_dir, params, rows) if main else None)
        if resume_from is not None and not resume_from.is_dir():
            raise DataError(f"{resume_from}: process 0 resumes from this checkpoint, which process "
                            f"{rank} cannot see; put {checkpoint_dir} on a filesystem every "
                            "machine shares to resume a run on several machines")
    resume_step = checkpoint_step(resume_from) if resume_from else None
    batching = choose_batching(params, backend)
    trainer = build_trainer(params, backend, batching, model, tokenizer, dataset,
                            output_dir=checkpoint_dir or out_dir / ".trainer",
                            save_checkpoints=checkpoint_dir is not None,
                            callbacks=[*callbacks, *([live_callback(live_dir, resume_step)]
                                                     if live_dir and main else [])])
    check_mixed_precision(trainer, loaded.precision)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = TokenCount(*sum_over_processes([counter.count.processed, counter.count.real]))
    if main:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        make_adapter_config_portable(out_dir / "adapter_config.json", params.model_name)
        if params.save_merged:
            save_merged(model, tokenizer, out_dir / MERGED_DIR)
        if checkpoint_dir is not None:
            remove_checkpoints(checkpoint_dir)
    wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    runtime = result.metrics["train_runtime"]
    return {
        "backend": backend,
        "trainer": type(trainer).__name__,
        "device": "cuda" if has_cuda() else "cpu",
        "precision": loaded.precision,
        "loaded_model": loaded_model_name(params, loaded.loaded_model),
        "batching": batching,
        "final_loss": round(losses[-1], 4) if losses else round(float(result.training_loss), 4),
        "train_loss": round(float(result.training_loss), 4),
        "train_examples": len(examples),
        "dropped_too_long": dropped,
        "longest_example_tokens": longest,
        "train_tokens": round(sum(len(e.input_ids) for e in examples) * params.epochs),
        "steps": trainer.state.global_step,
        "num_processes": processes,
        "gradient_accumulation_steps": params.accumulation_steps,
        "global_batch_size": params.effective_batch_size,
        "resumed_from_step": resume_step or 0,
        "padding_share": round(tokens.padding_share, 4),
        "tokens_per_s": round(tokens.processed / runtime, 1) if runtime else 0.0,
        "real_tokens_per_s": round(tokens.real / runtime, 1) if runtime else 0.0,
        "train_runtime_s": round(runtime, 2),
        "wall_s": round(wall, 2),
        "trainable_params": trainable,
        "peak_memory_mb": round(_peak_memory_mb(), 1),
    }


def choose_batching(params: TrainParams, backend: str) -> str:
    """``train.batching`` resolved for this machine (see :mod:`text2sql.training.batching`)."""
    cuda = has_cuda()
    per_example = (cuda and backend == "unsloth" and params.batching in ("auto", "padding_free")
                   and unsloth_packed_attention() == PER_EXAMPLE_SDPA)
    if per_example:
        print("train: Unsloth would run a padding-free batch's attention once per example "
              "here: no FlashAttention or xformers, and torch's varlen kernel is missing or "
              "refused (it needs compute capability 8.0 and torch's deterministic algorithms off)"
              + ("; using padded batches" if params.batching == "auto" else ""))
    return resolve_batching(params.batching, cuda, per_example)


def build_trainer(params: TrainParams, backend: str, batching: str, model: Any, tokenizer: Any,
                  dataset: Any, *, output_dir: Path, save_checkpoints: bool, callbacks: list) -> Any:
    """TRL's SFTTrainer, or transformers' Trainer for plain PEFT on the CPU.

    On the CPU the batches come from :func:`text2sql.training.batching.make_collator`. On a GPU,
    TRL (and Unsloth's patch of it) makes its own padding-free batches, which Unsloth's
    attention kernels need to know the example boundaries.
    """
    from trl import SFTConfig, SFTTrainer

    cuda = has_cuda()
    common = dict(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.accumulation_steps,
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=params.lr_scheduler,
        weight_decay=params.weight_decay,
        gradient_checkpointing=params.gradient_checkpointing,
        seed=params.seed,
        data_seed=params.seed,
        logging_steps=params.logging_steps,
        save_strategy="steps" if save_checkpoints else "no",
        save_steps=params.checkpoint_steps,
        save_total_limit=2,
        report_to="none",
        use_cpu=not cuda,
        disable_tqdm=False,
        train_sampling_strategy="group_by_length" if batching == "grouped" else "random",
        **trainer_precision_flags(),
    )
    if backend == "peft" and not cuda:
        # TRL's SFTTrainer computes the loss with a Triton kernel (its fused LM head), which
        # needs a GPU; Unsloth patches it for the CPU, plain PEFT does not. The examples are
        # already tokenized with their labels, so transformers' Trainer does the same job.
        if params.packing:
            raise DataError("train.packing=true needs TRL's SFTTrainer: on the CPU that means "
                            "train.backend=unsloth (or auto)")
        from transformers import Trainer, TrainingArguments

        return Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset,
                       processing_class=tokenizer, callbacks=callbacks,
                       data_collator=make_collator(tokenizer, batching == "padding_free"))
    if cuda:
        padding_free = batching == "padding_free" and not params.packing
        # TRL enforces max_length only by truncating; the examples are already filtered.
        config = SFTConfig(**common, packing=params.packing, padding_free=padding_free,
                           max_length=None if padding_free else params.max_seq_length,
                           dataset_num_proc=None)
        return SFTTrainer(model=model, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=callbacks)
    # Unsloth on the CPU turns TRL's padding-free off (it assumes SDPA attends across
    # examples; transformers 5 keeps them apart), so the collator is given explicitly.
    config = SFTConfig(**common, packing=params.packing, max_length=params.max_seq_length,
                       dataset_num_proc=None)
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      callbacks=callbacks,
                      data_collator=None if params.packing
                      else make_collator(tokenizer, batching == "padding_free"))


def check_mixed_precision(trainer: Any, precision: str) -> None:
    """Fail when the trainer would compute in another precision than the one recorded.

    Unsloth's CPU backend rewrites TrainingArguments (fp16 to bf16 where the CPU has bf16
    instructions); the recorded ``precision`` must be what the steps really compute in.
    """
    expected = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}[precision]
    found = trainer.accelerator.state.mixed_precision
    if str(getattr(found, "value", found)) != expected:
        raise RuntimeError(f"train: the trainer computes in mixed precision {found!r}, not "
                           f"{precision} as this machine should (text2sql.modeling.precision)")


def loaded_model_name(params: TrainParams, loaded: str) -> str:
    """What was loaded, as recorded: the built-in model's name instead of its temporary folder."""
    return params.model_name if is_builtin(params.model_name) else loaded


def make_adapter_config_portable(config_file: Path, model_name: str) -> None:
    """Name the base model as the params do, and sort module lists, so the file is reproducible.

    PEFT records the checkpoint the base was loaded from: for the built-in model a
    temporary folder, with ``load_in_4bit`` Unsloth's pre-quantized ``-bnb-4bit`` copy.
    The adapter was trained for the model the user named, so that is the base recorded
    (what was loaded goes to ``provenance.json`` and the model card). PEFT also writes
    module names in set order, which changes from run to run.
    """
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = model_name
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    """The base model with the adapter merged in, in 16-bit, loadable without PEFT."""
    import torch

    if hasattr(model, "save_pretrained_merged") and has_cuda():
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit",
                                     temporary_location=str(UNSLOTH_TEMPORARY_DIR))
        return
    merged = model.merge_and_unload()
    merged.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
