"""Fine-tuning: LoRA/QLoRA with Unsloth (or plain PEFT) and TRL's SFTTrainer.

The loss covers the answer only: prompt tokens carry label -100 and the SQL plus
the end-of-turn token carry their ids (see :func:`tokenize_example`).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.params import TrainParams
from text2sql.tiny_model import CHATML_TEMPLATE, build_tiny_model, check_builtin_name, is_builtin

IGNORE_INDEX = -100
BASE_MODEL_DIR = "base_model"  # inside the adapter folder, for built-in models


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


def train(params: TrainParams, rows: Sequence[dict[str, Any]], out_dir: Path,
          log_dir: Path | None = None) -> dict[str, float | str]:
    """Fine-tune on the prepared ``rows``; save the adapter and tokenizer to ``out_dir``.

    Returns flat metrics for ``metrics/train.json``.
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
    cuda = has_cuda()
    config = SFTConfig(
        output_dir=str(log_dir or out_dir / ".trainer"),
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=params.lr_scheduler,
        weight_decay=params.weight_decay,
        gradient_checkpointing=params.gradient_checkpointing,
        packing=params.packing,
        max_length=params.max_seq_length,
        seed=params.seed,
        data_seed=params.seed,
        logging_steps=params.logging_steps,
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        fp16=False,
        dataset_num_proc=None,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    wall = time.perf_counter() - start
    n_tokens = sum(len(e.input_ids) for e in examples) * params.epochs
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "backend": backend,
        "device": "cuda" if cuda else "cpu",
        "final_loss": round(losses[-1], 4) if losses else float(result.training_loss),
        "train_loss": round(float(result.training_loss), 4),
        "train_examples": len(examples),
        "dropped_too_long": dropped,
        "steps": trainer.state.global_step,
        "tokens_per_s": round(n_tokens / result.metrics["train_runtime"], 1),
        "train_runtime_s": round(result.metrics["train_runtime"], 2),
        "wall_s": round(wall, 2),
        "trainable_params": trainable,
        "peak_memory_mb": round(_peak_memory_mb(), 1),
    }


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
