"""Same code, data and params, same bits, on any x86-64 machine: pinned CPU numerics.

Floating-point sums come out differently when the kernels add in another order, and
PyTorch's CPU kernels pick their order from the machine: its own vectorized kernels by
instruction set (AVX2, AVX-512), MKL's GEMM by instruction set and vendor, oneDNN by
instruction set (AMX, AVX-512 BF16), and every parallel reduction by thread count. Two
machines then train different adapters from the same inputs. :func:`pin_cpu_numerics`
fixes each of these choices before torch is imported, so the training and inference
stages give bit-identical outputs on every x86-64 CPU with AVX2 (which means any from
the last ten years); the price is measured in docs/reproducibility.md.

GPUs are not pinned: CUDA kernels add their own float noise (see docs/reproducibility.md), and torch's
deterministic algorithms stay off there (:func:`deterministic_algorithms`).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

# torch's CPU thread count for the pipeline stages: fixed, so parallel reductions split
# the same way everywhere (a machine with fewer cores still gets the same result).
CPU_THREADS = 2

# Set before torch (and MKL, oneDNN) are loaded; each is read once, at load time.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorized kernels: the AVX2 build
    "MKL_CBWR": "COMPATIBLE",  # MKL: the same code path on Intel and AMD CPUs, any thread count
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: no AVX-512 / AMX kernels
    # MKL's reproducible mode splits work by thread count (measured: 1, 2 and 3 threads give
    # three different adapters), so the count is fixed and never lowered by MKL itself.
    "OMP_NUM_THREADS": str(CPU_THREADS),
    "MKL_NUM_THREADS": str(CPU_THREADS),
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}


def threads_per_process(processes: int) -> int:
    """torch's CPU threads in each of ``processes`` data-parallel processes on one machine.

    One process keeps :data:`CPU_THREADS`; N processes share them (at least one thread
    each), so N processes on a small machine do not oversubscribe its cores. A function of
    N alone, never of the machine, so the same params give the same numerics everywhere.
    """
    return max(1, CPU_THREADS // processes)


def deterministic_algorithms(cuda: bool) -> bool:
    """Whether a stage turns on torch's deterministic algorithms: on the CPU, not on a GPU.

    On the CPU they belong to the pinned numerics the committed results rest on. On a GPU
    the results are not pinned anyway, and the mode costs: Unsloth then refuses torch's
    varlen attention (``unsloth/utils/attention_dispatch.py:611``), so a padding-free batch
    runs one SDPA call per example per layer, and every CUDA allocation is filled
    (``torch.utils.deterministic.fill_uninitialized_memory``).
    """
    return not cuda


def pin_cpu_numerics(threads: int = CPU_THREADS) -> dict[str, Any]:
    """Pin the CPU kernels' choices (see the module docstring); returns what is in force.

    Call it first thing in a stage, before anything imports torch. Called later, the
    environment variables come too late for this process; the record says so
    (``aten_capability`` is then the machine's own, not ``AVX2``). ``threads``: see
    :func:`threads_per_process`.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        late = "torch" in sys.modules
        for key, value in PINNED_ENV.items():
            os.environ[key] = value
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[key] = str(threads)
        if late:
            print("reproducibility: torch was imported before the CPU numerics were pinned; "
                  "this process may not reproduce the committed results", file=sys.stderr)
    import torch

    torch.set_num_threads(threads)
    if deterministic_algorithms(cuda=torch.cuda.is_available()):
        torch.use_deterministic_algorithms(True, warn_only=True)
    return cpu_numerics()


def cpu_numerics() -> dict[str, Any]:
    """The CPU numerics settings in force in this process (for provenance records)."""
    import torch

    return {
        "machine": platform.machine(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        **{key.lower(): os.environ.get(key) for key in ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA")},
    }
