"""Batched generation of SQL with a fine-tuned adapter."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_MODEL_DIR = "base_model"


@dataclass
class Generation:
    texts: list[str]  # one per sample
    seconds: float  # wall time of the batch, shared out per example
    new_tokens: int


def load_for_inference(adapter_dir: str | Path):
    """The base model with the adapter merged in, ready to generate, and its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; run the train stage first "
                                "(dvc repro train) or pass the folder of a trained adapter")
    local_base = adapter_dir / BASE_MODEL_DIR
    base = str(local_base) if local_base.is_dir() else \
        json.loads(config_file.read_text())["base_model_name_or_path"]
    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if cuda else torch.float32,
        device_map="cuda" if cuda else None)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.eval()
    return model, tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn and end-of-text ids that end generation."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i != tokenizer.unk_token_id and i >= 0:
            ids.add(i)
    return sorted(i for i in ids if i is not None)


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], *,
             batch_size: int = 16, max_new_tokens: int = 128, num_samples: int = 1,
             temperature: float = 0.7, seed: int = 0, progress: bool = True) -> list[Generation]:
    """Generate for every prompt (chat messages), in batches of similar length.

    Prompts are sorted by length so each batch pads little, left-padded, and results
    come back in the input order. ``num_samples`` > 1 samples at ``temperature``;
    otherwise decoding is greedy.
    """
    import torch
    from tqdm.auto import tqdm

    texts = [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
             for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[Generation | None] = [None] * len(texts)
    stops = stop_token_ids(tokenizer)
    torch.manual_seed(seed)
    sampling = num_samples > 1
    bar = tqdm(total=len(texts), desc="generate", unit="q", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=sampling,
                temperature=temperature if sampling else None, top_p=None, top_k=None,
                num_return_sequences=num_samples, eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id)
        dt = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:]
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        for j, i in enumerate(idx):
            rows = new[j * num_samples:(j + 1) * num_samples]
            n_new = int(sum(_count_until_stop(r.tolist(), stops) for r in rows))
            results[i] = Generation(decoded[j * num_samples:(j + 1) * num_samples],
                                    dt / len(idx), n_new)
        bar.update(len(idx))
    bar.close()
    return [r for r in results if r is not None]


def _count_until_stop(ids: list[int], stops: list[int]) -> int:
    for k, t in enumerate(ids):
        if t in stops:
            return k + 1
    return len(ids)
