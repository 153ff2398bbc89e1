"""Loading a trained adapter for inference, and batched generation of SQL with it.

Inference runs the model that was trained: the 16-bit base named in the adapter's
``adapter_config.json`` (never a pre-quantized ``-bnb-4bit`` copy, unless
``infer.load_in_4bit`` asks for 4-bit on purpose), in the precision the hardware
computes in (:mod:`text2sql.modeling.precision`), with the adapter applied. Decoding is exactly
what the caller asks for: the base's ``generation_config.json`` (repetition penalty,
top-k, ...) is not inherited.

Prompts are sorted by length so each batch pads little, padded on the left (a
decoder continues from the last position, so padding must come first), decoded
until the end-of-turn token, and handed back in the caller's order. With
``num_samples`` > 1 every prompt is sampled that many times and each sample's
sequence log-probability under the model is recorded, for self-consistency.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.io import DataError
from text2sql.modeling.precision import compute_precision
from text2sql.modeling.tiny import BASE_MODEL_DIR

# Suffixes of the pre-quantized bitsandbytes copies Unsloth publishes (and loads in 4-bit).
PRE_QUANTIZED_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


@dataclass
class Generation:
    """What the model wrote for one prompt."""

    texts: list[str]  # one per sample
    seconds: float  # wall time of the batch, shared out over its prompts
    new_tokens: int  # generated tokens over all samples, up to and including the stop token
    logprobs: list[float] = field(default_factory=list)  # per sample; empty unless scored
    prompt_tokens: int = 0  # tokens of the rendered prompt (counted once, whatever the samples)


@dataclass(frozen=True)
class InferenceBase:
    """Which base model inference loads, in what precision, and how the adapter is applied."""

    name: str  # the 16-bit base: builtin:..., a hub id or a local path
    path: str  # what from_pretrained reads (the built-in model's base_model/ folder)
    precision: str  # bfloat16 | float16 | float32: what the model computes in
    load_in_4bit: bool  # the base quantized to 4-bit (NF4) on loading, on purpose
    adapter_merged: bool  # merged into the base weights, else applied beside them
    note: str = ""  # why ``name`` is not what adapter_config.json says, if it is not

    def metrics(self) -> dict[str, str | bool]:
        """What ``metrics/infer.json`` records about the model that wrote the predictions."""
        return {"base_model": self.name, "precision": self.precision,
                "load_in_4bit": self.load_in_4bit, "adapter_merged": self.adapter_merged}


def unquantized_name(name: str) -> str | None:
    """The 16-bit model a pre-quantized ``-bnb-4bit`` checkpoint was made from; None for others.

    Unsloth's own table (``unsloth/models/mapper.py``) is read when Unsloth is installed,
    without importing Unsloth (which patches transformers); it knows the few copies whose
    original is not just the name without the suffix (``unsloth/Qwen2-70B-bnb-4bit`` is
    ``Qwen/Qwen2-70B``). Otherwise the suffix is dropped, as Unsloth itself does.
    """
    table = _unsloth_int_to_float()
    mapped = table.get(name) or table.get(name.lower())
    if mapped:
        return mapped
    for suffix in PRE_QUANTIZED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return None


def _unsloth_int_to_float() -> dict[str, str]:
    try:
        spec = importlib.util.find_spec("unsloth")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return {}
    mapper = Path(list(spec.submodule_search_locations)[0]) / "models" / "mapper.py"
    if not mapper.is_file():
        return {}
    module_spec = importlib.util.spec_from_file_location("_unsloth_mapper", mapper)
    if module_spec is None or module_spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)  # a plain table: it imports nothing
    except Exception:  # a future layout of Unsloth's file: the suffix rule still applies
        return {}
    table = getattr(module, "INT_TO_FLOAT_MAPPER", {})
    return table if isinstance(table, dict) else {}


def choose_base(adapter_dir: str | Path, *, load_in_4bit: bool = False,
                precision: str | None = None) -> InferenceBase:
    """The base inference loads for the adapter in ``adapter_dir``, and how.

    The base is the adapter's own ``base_model/`` folder for the built-in model, else
    ``base_model_name_or_path`` from ``adapter_config.json``; a pre-quantized
    ``-bnb-4bit`` name there (written by Unsloth after a 4-bit run) is replaced by its
    16-bit original. The adapter is merged only in float32 (the CPU): merging into
    16-bit weights rounds the small LoRA delta to the weights' coarse grid, while
    keeping it beside them computes it as training did. ``load_in_4bit`` needs CUDA.
    ``precision``: ``float32`` loads on the CPU in float32 (and merges) whatever the
    machine has; default: the machine's choice (:func:`compute_precision`).
    """
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; run the train stage first "
                                "(dvc repro train) or pass the folder of a trained adapter")
    named = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not named:
        raise DataError(f"{config_file}: base_model_name_or_path is empty; set it to the base "
                        "model the adapter was trained on (hub id or local path)")
    precision = precision or compute_precision()
    if load_in_4bit and precision == "float32":
        raise DataError("infer.load_in_4bit=true needs a CUDA GPU (bitsandbytes); set it to "
                        "false to evaluate on the 16-bit base, in float32 on the CPU")
    local_base = adapter_dir / BASE_MODEL_DIR
    name, path, note = named, named, ""
    if local_base.is_dir():
        path = str(local_base)
    else:
        original = unquantized_name(named)
        if original is not None:
            if Path(named).is_dir() and not Path(original).is_dir():
                raise DataError(
                    f"{config_file}: the base {named!r} is a pre-quantized 4-bit copy and its "
                    f"16-bit original {original!r} is not there; put the 16-bit model there, "
                    "or set base_model_name_or_path to it")
            name = path = original
            note = (f"{config_file} names {named!r}, a pre-quantized 4-bit copy; loading its "
                    f"16-bit original {original!r}"
                    + (" and quantizing it (infer.load_in_4bit=true)" if load_in_4bit else
                       " (set infer.load_in_4bit=true to evaluate in 4-bit on purpose)"))
    local_config = Path(path) / "config.json"
    if local_config.is_file() and "quantization_config" in json.loads(local_config.read_text()):
        raise DataError(pre_quantized_base(path, config_file))
    return InferenceBase(name=name, path=path, precision=precision, load_in_4bit=load_in_4bit,
                         adapter_merged=precision == "float32" and not load_in_4bit, note=note)


def pre_quantized_base(path: str, config_file: Path) -> str:
    """Why a base that is already quantized is refused, and what to do."""
    return (f"the base {path!r} (from {config_file}) is a pre-quantized checkpoint, not the "
            "16-bit model the adapter was trained on; set base_model_name_or_path there to the "
            "16-bit model (infer.load_in_4bit=true quantizes it to evaluate in 4-bit)")


def load_for_inference(adapter_dir: str | Path, *, load_in_4bit: bool = False,
                       precision: str | None = None) -> tuple[Any, Any]:
    """The base model with the adapter applied, ready to generate, and its tokenizer.

    The base, its precision and whether the adapter is merged are :func:`choose_base`'s
    choice. With ``load_in_4bit`` the 16-bit base is quantized to NF4 on loading (as the
    PEFT training path does) and the adapter kept beside it, never merged into it.
    ``precision``: see :func:`choose_base`.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = choose_base(adapter_dir, load_in_4bit=load_in_4bit, precision=precision)
    if base.note:
        print(base.note, file=sys.stderr)
    dtype = getattr(torch, base.precision)
    kwargs: dict[str, Any] = {}
    if base.load_in_4bit:
        from text2sql.modeling.precision import nf4_config

        kwargs["quantization_config"] = nf4_config(dtype)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    prepare_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(
        base.path, dtype=dtype, device_map="cuda" if base.precision != "float32" else None,
        **kwargs)
    if getattr(model, "hf_quantizer", None) is not None and not base.load_in_4bit:
        raise DataError(pre_quantized_base(base.path, Path(adapter_dir) / "adapter_config.json"))
    model = PeftModel.from_pretrained(model, adapter_dir)
    if base.adapter_merged:
        model = model.merge_and_unload()
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


def decoding_config(tokenizer: Any, *, max_new_tokens: int, num_samples: int = 1,
                    temperature: float = 0.7) -> Any:
    """The complete ``GenerationConfig`` of a ``generate`` call, from our params alone.

    Greedy (``num_samples`` = 1) is the argmax of the model's own logits; sampling draws
    from them at ``temperature`` with no top-k / top-p cut. Every other setting is the
    neutral one, so nothing changes the model's distribution (no repetition or length
    penalty, no n-gram ban, no minimum length, no forced or banned tokens).
    """
    from transformers import GenerationConfig

    sampling = num_samples > 1
    return GenerationConfig(
        max_new_tokens=max_new_tokens, num_return_sequences=num_samples, num_beams=1,
        do_sample=sampling,
        **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sampling else {}),
        eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, min_length=0,
    )


@contextmanager
def only_config(model: Any, config: Any) -> Iterator[None]:
    """Make ``config`` the model's own generation config while inside the block.

    transformers fills every field a ``generate`` call leaves unset from the model's
    ``generation_config`` (read from the base's ``generation_config.json``: Qwen2.5
    Instruct sets ``repetition_penalty``, ``top_k``, ``top_p``, ``temperature``). With
    ``config`` in its place, what is not set falls back to transformers' neutral defaults.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = inner.generation_config
    inner.generation_config = config
    try:
        yield
    finally:
        inner.generation_config = saved


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[dict[str, str]]], *,
             batch_size: int = 16, max_new_tokens: int = 128, num_samples: int = 1,
             temperature: float = 0.7, seed: int = 0, score: bool | None = None,
             progress: bool = True) -> list[Generation]:
    """Generate for every prompt (a list of chat messages); results in input order.

    ``batch_size`` counts sequences: a batch holds ``batch_size // num_samples``
    prompts (at least one), each sampled ``num_samples`` times at ``temperature``;
    with ``num_samples`` = 1 decoding is greedy. Nothing else shapes decoding (see
    :func:`decoding_config`). ``score`` (default: when sampling) records each
    sequence's log-probability under the model, untempered.
    """
    import torch
    from tqdm.auto import tqdm

    if num_samples > 1 and temperature <= 0:
        raise ValueError("infer.temperature must be > 0 when infer.num_samples > 1 "
                         "(sampling at temperature 0 gives N copies of the greedy answer)")
    prepare_tokenizer(tokenizer)
    score = num_samples > 1 if score is None else score
    texts = render_prompts(tokenizer, prompts)
    results: list[Generation | None] = [None] * len(texts)
    stops = stop_token_ids(tokenizer)
    config = decoding_config(tokenizer, max_new_tokens=max_new_tokens, num_samples=num_samples,
                             temperature=temperature)
    torch.manual_seed(seed)
    bar = tqdm(total=len(texts), desc="generate", unit="question", disable=not progress)
    lengths = prompt_lengths(tokenizer, texts)
    for idx in batch_plan(lengths, batch_size, num_samples):
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        recorder = _logprob_recorder(stops) if score else None
        t0 = time.perf_counter()
        with torch.inference_mode(), only_config(model, config):
            out = model.generate(**enc, generation_config=config,
                                 logits_processor=[recorder] if recorder is not None else None)
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
                logprobs=[logprobs[r] for r in rows] if logprobs else [],
                prompt_tokens=lengths[i])
        bar.update(len(idx))
    bar.close()
    return [r for r in results if r is not None]


def prompt_lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens in each rendered prompt (:func:`render_prompts`)."""
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] \
        if texts else []


def batch_plan(lengths: Sequence[int], batch_size: int, num_samples: int = 1) -> list[list[int]]:
    """The prompts of each batch :func:`generate` runs, by index: sorted by length (ties in
    input order), ``batch_size // num_samples`` prompts a batch (at least one).

    Handing a process whole batches of this plan, in plan order, makes it run exactly
    these batches, padding included, so its answers are the ones one process gives.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    per_batch = max(1, batch_size // num_samples)
    return [order[start:start + per_batch] for start in range(0, len(order), per_batch)]


def _logprob_recorder(stops: Sequence[int]) -> Any:
    """A logits processor that sums each sequence's token log-probabilities as it grows.

    transformers runs custom processors before the sampling warpers (temperature),
    and :func:`decoding_config` adds no processor of its own (no penalty), so the
    scores it sees are the model's own. At step t it keeps the log-softmax;
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
