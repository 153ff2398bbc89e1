"""GPU memory of one QLoRA training step with Unsloth, estimated from the model's shape.

The presets turn gradient checkpointing on only where a micro-batch would not fit without
it: checkpointing runs every layer's forward again in the backward pass (about a third
more compute per step), and a smaller micro-batch that fits costs less than that. The
estimate counts what Unsloth's kernels keep for the backward pass (file:line below), for
a 4-bit base and 16-bit compute; docs/gpu.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30

# The longest example the presets are sized for (their max_seq_length is null: the data's
# longest). Spider's longest training example under the default prompt is 4,580 characters
# of prompt and SQL, about 1,500 tokens at 3 characters a token; 2048 leaves room for the
# tokenizer's spread and the chat template. A padded micro-batch is batch_size of them.
DESIGN_EXAMPLE_TOKENS = 2048

# Share of the card a step may plan to use: the rest is the CUDA context, the allocator's
# fragmentation and the 4-bit weights dequantized one at a time for each matmul.
USABLE_SHARE = 0.9

# unsloth_zoo/fused_losses/cross_entropy_loss.py:222-229: the loss is computed in chunks of
# the logits, 16 bytes per token and vocabulary row, each chunk at most 4 GiB.
LOSS_BYTES_PER_LOGIT = 16
LOSS_CHUNK_CAP = 4 * GIB

NF4_BYTES_PER_WEIGHT = 4.127 / 8  # 4-bit codes plus double-quantized absmax per 64 weights
ADAPTER_BYTES_PER_PARAM = 16  # float32 weight, gradient and Adam's two moments


@dataclass(frozen=True)
class ModelShape:
    """The config.json numbers that set a decoder's memory."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads


# Qwen2.5-Coder-*-Instruct config.json (hub, 2024-11).
QWEN_CODER_SHAPES = {
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": ModelShape(896, 24, 4864, 14, 2, 151936, True),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": ModelShape(1536, 28, 8960, 12, 2, 151936, True),
    "Qwen/Qwen2.5-Coder-3B-Instruct": ModelShape(2048, 36, 11008, 16, 2, 151936, True),
    "Qwen/Qwen2.5-Coder-7B-Instruct": ModelShape(3584, 28, 18944, 28, 4, 152064, False),
}


def activation_bytes_per_token_layer(shape: ModelShape) -> int:
    """Bytes one decoder layer keeps for the backward pass, per token, without checkpointing.

    16-bit: both RMSNorm inputs (``unsloth/kernels/rms_layernorm.py:981``), the q/k/v and
    MLP inputs (``unsloth/kernels/fast_lora.py:845``, ``:448``), the MLP's gate and up
    outputs (``fast_lora.py:448``), the attention's q, k, v and output (the output is the
    o_proj input, ``fast_lora.py:1073``); float32: the two norms' scales and the
    attention's log-sum-exp per head. LoRA's rank-r products are recomputed, not kept.
    """
    h, i = shape.hidden, shape.intermediate
    return 2 * (6 * h + 2 * shape.kv_width + 2 * i) + 4 * (2 + shape.heads)


def step_memory_bytes(shape: ModelShape, lora_r: int, tokens: int, checkpointing: bool) -> float:
    """Peak GPU bytes of a training step over ``tokens`` tokens (a micro-batch), LoRA on all
    seven projections of every layer.

    Without checkpointing every layer's activations are kept. With it each layer keeps its
    input only, counted on the GPU as plain checkpointing does (Unsloth's mode, from 512
    tokens, moves them to CPU memory: ``unsloth/models/_utils.py:502-513``, an upper bound
    then), and one layer's activations are rebuilt at a time. Either way one more layer's
    worth is counted for the gradients of the layer being differentiated.
    """
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_width
    linear = 2 * h * h + 2 * h * kv + 3 * h * i  # q, o; k, v; gate, up, down
    embeddings = shape.vocab * h * (1 if shape.tied_embeddings else 2)
    weights = shape.layers * linear * NF4_BYTES_PER_WEIGHT + 2 * embeddings
    adapter = shape.layers * lora_r * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))
    per_layer = activation_bytes_per_token_layer(shape)
    kept_layers = 1 if checkpointing else shape.layers
    activations = tokens * (per_layer * (kept_layers + 1)
                            + (2 * h * shape.layers if checkpointing else 0))
    loss = min(tokens * shape.vocab * LOSS_BYTES_PER_LOGIT, LOSS_CHUNK_CAP)
    return weights + adapter * ADAPTER_BYTES_PER_PARAM + activations + loss


def fits(shape: ModelShape, lora_r: int, tokens: int, gpu_memory_gb: int,
         checkpointing: bool) -> bool:
    """Whether the step fits in :data:`USABLE_SHARE` of a card of ``gpu_memory_gb`` GB."""
    return step_memory_bytes(shape, lora_r, tokens, checkpointing) <= (
        USABLE_SHARE * gpu_memory_gb * 10**9)
