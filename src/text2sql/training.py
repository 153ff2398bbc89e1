"""Fine-tuning: LoRA/QLoRA with Unsloth (or plain PEFT) and TRL's SFTTrainer.

The loss covers the answer only: prompt tokens carry label -100 and the SQL plus
the end-of-turn token carry their ids (see :func:`tokenize_example`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.params import TrainParams
from text2sql.tiny_model import (BASE_MODEL_DIR, CHATML_TEMPLATE, build_tiny_model,
                                 check_builtin_name, is_builtin)

IGNORE_INDEX = -100
MERGED_DIR = "merged"  # inside the adapter folder, with train.save_merged
FINGERPRINT_FILE = "fingerprint.json"


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def tokenize_example(tokenizer: Any, prompt: Sequence[dict[str, str]], answer: str) -> Tokenized:
    """Token ids of prompt + answer, with the prompt masked out of the labels.

    The prompt is the chat template applied with the generation prompt; the answer
    is what the template puts after it for the assistant turn (the SQL and the
    end-of-turn token), without trailing whitespace.
    """
    messages = list(prompt)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently once the answer is "
                         "added; answer-only masking needs a prefix-stable template")
    answer_text = full_text[len(prompt_text):].rstrip()
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    return Tokenized(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids)


def tokenize_rows(tokenizer: Any, rows: Sequence[dict[str, Any]], max_seq_length: int
                  ) -> tuple[list[Tokenized], int]:
    """Tokenize prepared rows; drop those longer than ``max_seq_length`` (returned count)."""
    kept, dropped = [], 0
    for row in rows:
        tok = tokenize_example(tokenizer, row["prompt"], row["completion"][0]["content"])
        if len(tok.input_ids) > max_seq_length:
            dropped += 1
            continue
        kept.append(tok)
    if not kept:
        raise DataError(f"every training example is longer than train.max_seq_length="
                        f"{max_seq_length} tokens: raise it or shorten the prompts")
    if sum(t.n_answer_tokens for t in kept) == 0:
        raise DataError("every label is masked: no answer token would be trained on "
                        "(check the chat template and the completions in data/prepared/train.jsonl)")
    return kept, dropped


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """``unsloth`` or ``peft``: what ``train.backend`` asks for, or what imports (auto)."""
    if requested == "peft":
        return "peft"
    try:
        import unsloth  # noqa: F401  (Unsloth must be imported before transformers/trl/peft)
    except Exception as e:  # ImportError, or its own RuntimeError without a supported device
        if requested == "unsloth":
            raise RuntimeError(f"train.backend=unsloth, but Unsloth does not import: {e}") from e
        return "peft"
    return "unsloth"


def training_texts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """All text the built-in tokenizer is trained on: system, user and answer turns."""
    return [m["content"] for r in rows for m in (*r["prompt"], *r["completion"])]


def load_model(params: TrainParams, backend: str, model_path: str):
    """The base model with LoRA adapters attached, and its tokenizer."""
    lora = params.lora
    cuda = has_cuda()
    if params.load_in_4bit and not cuda:
        raise RuntimeError("train.load_in_4bit=true needs a CUDA GPU (bitsandbytes); "
                           "set it to false to train on the CPU")
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=model_path,
            max_seq_length=params.max_seq_length,
            load_in_4bit=params.load_in_4bit,
            dtype=None,
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            modules_to_save=list(lora.modules_to_save) or None,
            bias="none",
            use_gradient_checkpointing="unsloth" if params.gradient_checkpointing else False,
            random_state=params.seed,
        )
    else:
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        kwargs: dict[str, Any] = {}
        if params.load_in_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch.bfloat16 if cuda else torch.float32, **kwargs)
        if params.load_in_4bit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=params.gradient_checkpointing)
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            modules_to_save=list(lora.modules_to_save) or None, task_type="CAUSAL_LM"))
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def fingerprint(params: TrainParams, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the params and the training data."""
    data = hashlib.sha256()
    for row in rows:
        data.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return {"params": hashlib.sha256(params.model_dump_json().encode()).hexdigest(),
            "data": data.hexdigest()}


def find_resumable_checkpoint(checkpoint_dir: Path, expected: dict[str, str]) -> Path | None:
    """The last checkpoint in ``checkpoint_dir`` if it was made with the same params and data.

    Checkpoints from other params or data are removed with a message, never resumed.
    """
    marker = checkpoint_dir / FINGERPRINT_FILE
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"),
                         key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)
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


def live_callback(live_dir: Path, resume_step: int | None):
    """DVCLive's transformers callback, writing only the loss curve under ``live_dir``.

    Points are logged against the trainer's global step, so a resumed run's curve
    continues where the killed one stopped; hyperparameters and summaries are not
    written (they are in params.yaml and metrics/train.json).
    """
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    class StepAlignedDVCLive(DVCLiveCallback):
        def setup(self, args, state, model):
            self._initialized = True

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            for key in ("loss", "learning_rate", "grad_norm"):
                if logs and key in logs:
                    self.live.step = state.global_step
                    self.live.log_metric(key, float(logs[key]))

        def on_train_end(self, args, state, control, **kwargs):
            pass

    if resume_step is not None:
        trim_curve(live_dir, resume_step)
    live = Live(dir=str(live_dir), resume=resume_step is not None, save_dvc_exp=False,
                dvcyaml=None, report=None)
    return StepAlignedDVCLive(live=live)


def trim_curve(live_dir: Path, last_step: int) -> None:
    """Drop the curve's points after ``last_step`` (logged after the checkpoint resumed from)."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        col = header.split("\t").index("step")
        kept = [r for r in rows if int(r.split("\t")[col]) <= last_step]
        tsv.write_text("\n".join([header, *kept]) + "\n")


def train(params: TrainParams, rows: Sequence[dict[str, Any]], out_dir: Path,
          checkpoint_dir: Path | None = None, live_dir: Path | None = None
          ) -> dict[str, float | str]:
    """Fine-tune on the prepared ``rows``; save the adapter and tokenizer to ``out_dir``.

    With ``checkpoint_dir``, a checkpoint is written every ``params.checkpoint_steps``
    steps and a run with the same params and data resumes from the last one. With
    ``live_dir``, the training curve is logged there with DVCLive. Returns flat metrics
    for ``metrics/train.json``.
    """
    start = time.perf_counter()
    backend = resolve_backend(params.backend)
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(params.seed)
    model_path = params.model_name
    if is_builtin(params.model_name):
        check_builtin_name(params.model_name)
        model_path = str(build_tiny_model(training_texts(rows), out_dir / BASE_MODEL_DIR,
                                          seed=params.seed, **params.builtin.model_dump()))
    model, tokenizer = load_model(params, backend, model_path)
    examples, dropped = tokenize_rows(tokenizer, rows, params.max_seq_length)
    dataset = Dataset.from_dict({"input_ids": [e.input_ids for e in examples],
                                 "labels": [e.labels for e in examples]})
    resume_from = None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        expected = fingerprint(params, rows)
        resume_from = find_resumable_checkpoint(checkpoint_dir, expected)
        (checkpoint_dir / FINGERPRINT_FILE).write_text(json.dumps(expected, indent=1))
        if resume_from is not None:
            print(f"train: resuming from {resume_from}")
    cuda = has_cuda()
    common = dict(
        output_dir=str(checkpoint_dir or out_dir / ".trainer"),
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=params.lr_scheduler,
        weight_decay=params.weight_decay,
        gradient_checkpointing=params.gradient_checkpointing,
        seed=params.seed,
        data_seed=params.seed,
        logging_steps=params.logging_steps,
        save_strategy="steps" if checkpoint_dir is not None else "no",
        save_steps=params.checkpoint_steps,
        save_total_limit=2,
        report_to="none",
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        disable_tqdm=False,
    )
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from else None
    callbacks = [live_callback(live_dir, resume_step)] if live_dir else []
    if backend == "peft" and not cuda:
        # TRL's SFTTrainer computes the loss with a Triton kernel (its fused LM head), which
        # needs a GPU; Unsloth patches it for the CPU, plain PEFT does not. The examples are
        # already tokenized with their labels, so transformers' Trainer does the same job.
        if params.packing:
            raise DataError("train.packing=true needs TRL's SFTTrainer: on the CPU that means "
                            "train.backend=unsloth (or auto)")
        from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset,
                          processing_class=tokenizer, callbacks=callbacks,
                          data_collator=DataCollatorForSeq2Seq(
                              tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX))
    else:
        config = SFTConfig(**common, packing=params.packing, max_length=params.max_seq_length,
                           dataset_num_proc=None)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    make_adapter_config_portable(out_dir / "adapter_config.json", params.model_name)
    if params.save_merged:
        save_merged(model, tokenizer, out_dir / MERGED_DIR)
    if checkpoint_dir is not None:  # finished: the adapter is the result now
        for c in checkpoint_dir.glob("checkpoint-*"):
            shutil.rmtree(c)
    wall = time.perf_counter() - start
    n_tokens = sum(len(e.input_ids) for e in examples) * params.epochs
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    runtime = result.metrics["train_runtime"]
    return {
        "backend": backend,
        "trainer": type(trainer).__name__,
        "device": "cuda" if cuda else "cpu",
        "final_loss": round(losses[-1], 4) if losses else round(float(result.training_loss), 4),
        "train_loss": round(float(result.training_loss), 4),
        "train_examples": len(examples),
        "dropped_too_long": dropped,
        "steps": trainer.state.global_step,
        "resumed_from_step": resume_step or 0,
        "tokens_per_s": round(n_tokens / runtime, 1) if runtime else 0.0,
        "train_runtime_s": round(runtime, 2),
        "wall_s": round(wall, 2),
        "trainable_params": trainable,
        "peak_memory_mb": round(_peak_memory_mb(), 1),
    }


def make_adapter_config_portable(config_file: Path, model_name: str) -> None:
    """Name the base model as the params do, and sort module lists, so the file is reproducible.

    PEFT records the folder the base was loaded from (for the built-in model a temporary
    one) and writes module names in set order, which changes from run to run.
    """
    config = json.loads(config_file.read_text())
    if is_builtin(model_name):
        config["base_model_name_or_path"] = model_name  # its weights are in base_model/
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_merged(model: Any, tokenizer: Any, out: Path) -> None:
    """The base model with the adapter merged in, in 16-bit, loadable without PEFT."""
    import torch

    if hasattr(model, "save_pretrained_merged") and has_cuda():
        model.save_pretrained_merged(str(out), tokenizer, save_method="merged_16bit")
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
