"""The floating-point precision a model computes in, chosen from the hardware.

One rule for training and inference, so a model is evaluated in the precision it was
trained in: bfloat16 on a CUDA GPU that supports it (Ampere and later), float16 on
older GPUs (T4, V100), float32 on the CPU. The CPU never gets bfloat16, even where the
processor has bf16 instructions: its bf16 kernels differ by instruction set, so results
would change from one machine to another.
"""

from __future__ import annotations

from typing import Any, Literal

Precision = Literal["bfloat16", "float16", "float32"]


def compute_precision() -> Precision:
    """``bfloat16``, ``float16`` or ``float32``: what this machine's default device computes in."""
    import torch

    if not torch.cuda.is_available():
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def compute_dtype() -> Any:
    """The ``torch.dtype`` of :func:`compute_precision`."""
    import torch

    return getattr(torch, compute_precision())
