"""Batches of tokenized examples: padding-free (flattened) or padded, and what they cost.

``train.batching`` picks one: ``padding_free``; ``grouped`` (padded, examples of similar
length batched together, fewer pad tokens); ``padded`` (random order); ``auto``:
padding-free on a GPU whose kernels attend within each example (FlashAttention, xformers,
torch's varlen), else padded. On the CPU the attention of a flattened batch runs over the
whole batch with a dense mask (transformers' SDPA), which for a small model costs more than
the padding it saves (measured in CPU time for the built-in model: 1.7x the padded step).
``grouped`` is never chosen for you: batches of one length are batches of one kind of
question on templated data, and the built-in model trained that way on the sample data
scored 0.10 execution accuracy instead of 0.96 (8 epochs, the same steps).

Padding-free batching concatenates a batch's examples into one row and restarts the
position ids at 0 for each example. transformers (5.x) turns position ids that restart
into a block-diagonal causal mask for the ``sdpa`` and ``eager`` attention (see
``masking_utils.find_packed_sequence_indices``), and flash attention reads the same
boundaries, so no token attends to another example: each example's loss is the one it
has alone (``tests/test_batching.py`` checks it). Nothing is padded, so no compute is
spent on pad tokens. Padded batches pad to the batch's longest example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from text2sql.training.masking import IGNORE_INDEX

BATCHINGS = ("padded", "grouped", "padding_free")


def resolve_batching(requested: str, cuda: bool, packed_attention_per_example: bool = False) -> str:
    """The batching ``train.batching`` asks for; ``auto`` chooses from the hardware.

    ``packed_attention_per_example``: the GPU's kernel would attend example by example in a
    flattened batch (Unsloth without FlashAttention, xformers or torch varlen): ``auto``
    then pads instead.
    """
    if requested != "auto":
        return requested
    return "padding_free" if cuda and not packed_attention_per_example else "padded"


def make_collator(tokenizer: Any, padding_free: bool) -> Callable[[list[dict]], dict]:
    """The collator for ``{"input_ids", "labels"}`` examples: flattened or padded."""
    if padding_free:
        from transformers import DataCollatorWithFlattening

        # Its separator masks each example's first label: always a prompt token here.
        return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


@dataclass
class TokenCount:
    """Tokens in the batches a run processed: all positions, and the real (non-pad) ones."""

    processed: int = 0
    real: int = 0

    @property
    def padding(self) -> int:
        return self.processed - self.real

    @property
    def padding_share(self) -> float:
        """Share of processed positions that were padding (0.0 when nothing was processed)."""
        return self.padding / self.processed if self.processed else 0.0


class CountingCollator:
    """Wraps a collator and counts the tokens of every batch it makes.

    Batches a resumed run skips are never collated, so after a resume the count covers
    the part of the run this process did. A batch without an attention mask (flattened)
    has no padding.
    """

    def __init__(self, collator: Callable[[list[dict]], dict]):
        self.collator = collator
        self.count = TokenCount()

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        ids = batch["input_ids"]
        self.count.processed += int(ids.numel())
        mask = batch.get("attention_mask")
        self.count.real += int(mask.sum()) if mask is not None else int(ids.numel())
        return batch

