"""``builtin:tiny-qwen2``: a small Qwen2 causal LM made offline from a config.

The model starts from random weights (seeded); its byte-level BPE tokenizer is
trained on the training split with Qwen2's own normalizer and split rule, so
``AutoTokenizer`` loads it back unchanged, and it carries a ChatML chat template.
It demonstrates the pipeline, not a model's quality.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

BUILTIN_PREFIX = "builtin:"
BASE_MODEL_DIR = "base_model"  # inside the adapter folder: the built-in base model's weights
BUILTIN_MODELS = ("tiny-qwen2",)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def is_builtin(model_name: str) -> bool:
    return model_name.startswith(BUILTIN_PREFIX)


def check_builtin_name(model_name: str) -> str:
    name = model_name.removeprefix(BUILTIN_PREFIX)
    if name not in BUILTIN_MODELS:
        raise ValueError(f"train.model_name: unknown built-in model {model_name!r}; "
                         f"built-in models: {', '.join(BUILTIN_PREFIX + m for m in BUILTIN_MODELS)}")
    return name


def training_texts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """All text the built-in tokenizer is trained on: system, user and answer turns."""
    return [m["content"] for r in rows for m in (*r["prompt"], *r["completion"])]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A Qwen2-style byte-level BPE tokenizer trained on ``texts``, with a ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    hf = Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    hf.chat_template = CHATML_TEMPLATE
    hf.model_max_length = 2048
    return hf


def build_tiny_model(texts: list[str], out_dir: str | Path, *, hidden_size: int,
                     intermediate_size: int, num_hidden_layers: int, num_attention_heads: int,
                     num_key_value_heads: int, vocab_size: int, seed: int) -> Path:
    """Train the tokenizer, make the randomly initialised model, save both to ``out_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
