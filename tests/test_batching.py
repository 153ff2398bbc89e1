"""Padding-free batches keep examples apart: an example's loss is the one it has alone."""

from __future__ import annotations

import pytest

from text2sql.training.batching import CountingCollator, make_collator
from text2sql.training.masking import IGNORE_INDEX

EXAMPLES = [  # token ids and answer-only labels of three examples of different lengths
    {"input_ids": [5, 9, 14, 3, 22, 7, 8], "labels": [IGNORE_INDEX] * 4 + [22, 7, 8]},
    {"input_ids": [11, 4, 6, 30, 2], "labels": [IGNORE_INDEX] * 3 + [30, 2]},
    {"input_ids": [17, 12, 19, 25, 26, 27, 28, 29, 31], "labels": [IGNORE_INDEX] * 5 + [27, 28, 29, 31]},
]


@pytest.fixture(scope="module")
def tokenizer():
    from text2sql.modeling.tiny import train_tokenizer

    return train_tokenizer(["SELECT name FROM t WHERE a = 1"] * 3, vocab_size=300)


def tiny_qwen2(attn_implementation: str):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation=attn_implementation)
    return Qwen2ForCausalLM(config).eval()


def token_losses(model, batch) -> list:
    """Per-token losses of a batch, in order, for the positions whose label is not masked."""
    import torch

    with torch.no_grad():  # use_cache=False as in training (TrainingArguments.use_cache)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"]
    shifted = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), shifted, ignore_index=IGNORE_INDEX, reduction="none")
    return losses[shifted != IGNORE_INDEX].tolist()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_flattened_batch_gives_each_example_the_loss_it_has_alone(tokenizer, attn_implementation):
    model = tiny_qwen2(attn_implementation)
    flatten = make_collator(tokenizer, padding_free=True)
    batch = flatten(EXAMPLES)
    assert batch["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in EXAMPLES))
    assert "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [i for e in EXAMPLES for i in range(len(e["input_ids"]))]
    together = token_losses(model, batch)
    alone = [x for e in EXAMPLES for x in token_losses(model, flatten([e]))]
    assert together == pytest.approx(alone, abs=1e-5)
    # Without restarting positions the examples would see each other: the check has teeth.
    import torch

    one_sequence = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    assert token_losses(model, one_sequence) != pytest.approx(alone, abs=1e-3)


def test_padded_batch_gives_the_same_losses_as_the_flattened_one(tokenizer):
    model = tiny_qwen2("sdpa")
    padded = make_collator(tokenizer, padding_free=False)(EXAMPLES)
    flat = make_collator(tokenizer, padding_free=True)(EXAMPLES)
    assert padded["input_ids"].shape == (3, 9)
    assert token_losses(model, padded) == pytest.approx(token_losses(model, flat), abs=1e-5)


def test_counting_collator_counts_real_and_padding_tokens(tokenizer):
    real = sum(len(e["input_ids"]) for e in EXAMPLES)
    padded = CountingCollator(make_collator(tokenizer, padding_free=False))
    padded(EXAMPLES[:2])
    padded(EXAMPLES[2:])
    assert (padded.count.processed, padded.count.real) == (2 * 7 + 9, real)
    assert padded.count.padding_share == pytest.approx(2 / 23)
    flat = CountingCollator(make_collator(tokenizer, padding_free=True))
    flat(EXAMPLES)
    assert (flat.count.processed, flat.count.real, flat.count.padding_share) == (real, real, 0.0)


def test_auto_batching_is_padding_free_on_a_gpu_and_padded_on_the_cpu():
    from text2sql.training.batching import resolve_batching

    assert resolve_batching("auto", cuda=True) == "padding_free"
    assert resolve_batching("auto", cuda=False) == "padded"
    assert resolve_batching("auto", cuda=True, packed_attention_per_example=True) == "padded"
    assert resolve_batching("padding_free", cuda=False) == "padding_free"  # asked for: kept
    assert resolve_batching("padded", cuda=True) == "padded"
