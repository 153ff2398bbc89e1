"""Batched generation of SQL with a fine-tuned adapter (transformers + PEFT).

Prompts are sorted by length so each batch pads little, padded on the left (a
decoder continues from the last position, so padding must come first), decoded
until the end-of-turn token, and handed back in the caller's order. With
``num_samples`` > 1 every prompt is sampled that many times and each sample's
sequence log-probability under the model is recorded, for self-consistency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.tiny_model import BASE_MODEL_DIR


@dataclass
class Generation:
    """What the model wrote for one prompt."""

    texts: list[str]  # one per sample
    seconds: float  # wall time of the batch, shared out over its prompts
    new_tokens: int  # generated tokens over all samples, up to and including the stop token
    logprobs: list[float] = field(default_factory=list)  # per sample; empty unless scored


def load_for_inference(adapter_dir: str | Path) -> tuple[Any, Any]:
    """The base model with the adapter merged in, ready to generate, and its tokenizer.

    The base is the adapter's own ``base_model/`` folder for the built-in model, else
    ``base_model_name_or_path`` from ``adapter_config.json``. bfloat16 on CUDA,
    float32 on the CPU.
    """
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
    prepare_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if cuda else torch.float32,
        device_map="cuda" if cuda else None)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model.eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding and a pad token: what batched decoding needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn and end-of-text ids that end generation."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i != tokenizer.unk_token_id and i >= 0:
            ids.add(i)
    return sorted(i for i in ids if i is not None)


def render_prompts(tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]]) -> list[str]:
    """Chat messages as the text the model continues (template + generation prompt)."""
    return [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
            for p in prompts]


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], *,
             batch_size: int = 16, max_new_tokens: int = 128, num_samples: int = 1,
             temperature: float = 0.7, seed: int = 0, score: bool | None = None,
             progress: bool = True) -> list[Generation]:
    """Generate for every prompt (a list of chat messages); results in input order.

    ``batch_size`` counts sequences: a batch holds ``batch_size // num_samples``
    prompts (at least one), each sampled ``num_samples`` times at ``temperature``;
    with ``num_samples`` = 1 decoding is greedy. ``score`` (default: when sampling)
    records each sequence's log-probability under the model, untempered.
    """
    import torch
    from tqdm.auto import tqdm

    if num_samples > 1 and temperature <= 0:
        raise ValueError("infer.temperature must be > 0 when infer.num_samples > 1 "
                         "(sampling at temperature 0 gives N copies of the greedy answer)")
    prepare_tokenizer(tokenizer)
    score = num_samples > 1 if score is None else score
    texts = render_prompts(tokenizer, prompts)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] \
        if texts else []
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    per_batch = max(1, batch_size // num_samples)
    results: list[Generation | None] = [None] * len(texts)
    stops = stop_token_ids(tokenizer)
    sampling = num_samples > 1
    generator_kwargs: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        if sampling else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
    torch.manual_seed(seed)
    bar = tqdm(total=len(texts), desc="generate", unit="question", disable=not progress)
    for start in range(0, len(order), per_batch):
        idx = order[start:start + per_batch]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        recorder = _logprob_recorder(stops) if score else None
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                logits_processor=[recorder] if recorder is not None else None,
                **generator_kwargs)
            logprobs = recorder.finish(out).tolist() if recorder is not None else []
        dt = time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:]
        decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
        new_ids = new.tolist()
        for j, i in enumerate(idx):
            rows = range(j * num_samples, (j + 1) * num_samples)
            results[i] = Generation(
                texts=[decoded[r] for r in rows],
                seconds=dt / len(idx),
                new_tokens=sum(_count_until_stop(new_ids[r], stops) for r in rows),
                logprobs=[logprobs[r] for r in rows] if logprobs else [])
        bar.update(len(idx))
    bar.close()
    return [r for r in results if r is not None]


def _logprob_recorder(stops: Sequence[int]) -> Any:
    """A logits processor that sums each sequence's token log-probabilities as it grows.

    transformers runs custom processors before the sampling warpers (temperature),
    so the scores it sees are the model's own. At step t it keeps the log-softmax;
    at step t+1 the token chosen at t is the last input id, and its log-probability
    is added while the sequence has not yet stopped. ``finish`` adds the last token.
    """
    import torch
    from transformers import LogitsProcessor

    class SequenceLogProb(LogitsProcessor):
        def __init__(self) -> None:
            self.previous: torch.Tensor | None = None
            self.total: torch.Tensor | None = None
            self.alive: torch.Tensor | None = None
            self.stops: torch.Tensor | None = None

        def _add(self, tokens: torch.Tensor) -> None:
            if self.previous is None:
                return
            if self.total is None:
                self.total = torch.zeros(tokens.shape[0], dtype=torch.float64, device=tokens.device)
                self.alive = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
                self.stops = torch.tensor(list(stops), device=tokens.device)
            step = self.previous.gather(1, tokens[:, None]).squeeze(1).double()
            self.total += torch.where(self.alive, step, torch.zeros_like(step))
            self.alive &= ~torch.isin(tokens, self.stops)

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self._add(input_ids[:, -1])
            self.previous = torch.log_softmax(scores.float(), dim=-1)
            return scores

        def finish(self, sequences: torch.Tensor) -> torch.Tensor:
            self._add(sequences[:, -1])
            self.previous = None
            assert self.total is not None, "generate() produced no token"
            return self.total.cpu()

    return SequenceLogProb()


def _count_until_stop(ids: list[int], stops: Sequence[int]) -> int:
    for k, t in enumerate(ids):
        if t in stops:
            return k + 1
    return len(ids)
