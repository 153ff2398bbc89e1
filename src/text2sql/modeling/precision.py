"""The floating-point precision a model computes in, chosen from the hardware.

One rule for every stage, so a model is evaluated and exported in the precision it was
trained in: bfloat16 on a CUDA GPU of compute capability 8.0 or later (Ampere on), float16
on older GPUs (T4, V100), float32 on the CPU. The rule reads the capability, never
``torch.cuda.is_bf16_supported()``: torch answers True on a T4 (bf16 emulated, slowly) and
Unsloth patches it to False only in the processes that import Unsloth, so train and align
would compute in float16 while infer and export ran emulated bfloat16. The CPU never gets
bfloat16, even where the processor has bf16 instructions: its bf16 kernels differ by
instruction set, so results would change from one machine to another.
"""

from __future__ import annotations

import os
from typing import Any, Literal

Precision = Literal["bfloat16", "float16", "float32"]

# Native bfloat16 tensor cores start with Ampere (sm_80); Unsloth draws the same line
# (unsloth/_gpu_init.py:557: SUPPORTS_BFLOAT16 = capability[0] >= 8).
BF16_MIN_MAJOR = 8


def precision_for(capability: tuple[int, int] | None) -> Precision:
    """The precision for a CUDA device of ``capability`` (major, minor); None: no GPU."""
    if capability is None:
        return "float32"
    return "bfloat16" if capability[0] >= BF16_MIN_MAJOR else "float16"


def cuda_capability() -> tuple[int, int] | None:
    """The compute capability the precision is judged on; None without a CUDA GPU.

    One process: the current device. Under a distributed launcher (``WORLD_SIZE`` > 1) the
    weakest visible GPU, so that every rank picks the same precision: Unsloth's rule
    (``unsloth/device_type.py:253-261``, ``cuda_bf16_capability``), which the train and
    align processes follow when it loads the model.
    """
    import torch

    if not torch.cuda.is_available():
        return None
    if int(os.environ.get("WORLD_SIZE") or "1") > 1:
        return min(tuple(torch.cuda.get_device_capability(i))
                   for i in range(torch.cuda.device_count()))
    return tuple(torch.cuda.get_device_capability())


def compute_precision() -> Precision:
    """``bfloat16``, ``float16`` or ``float32``: what this machine's default device computes in."""
    return precision_for(cuda_capability())


def compute_dtype() -> Any:
    """The ``torch.dtype`` of :func:`compute_precision`."""
    import torch

    return getattr(torch, compute_precision())


def nf4_config(compute_dtype: Any) -> Any:
    """The 4-bit quantization every 4-bit load uses (QLoRA's: NF4, double quantization,
    computing in ``compute_dtype``): training, align and infer quantize a base the same way."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)
