"""Data-parallel stages: several processes (one per GPU) under PyTorch's ``torchrun``.

With ``train.num_processes`` or ``infer.num_processes`` N > 1, a stage started as
``python stages/<stage>.py`` (DVC's command) replaces itself by ``python -m
torch.distributed.run --nproc-per-node N`` running the same script, with the rendezvous on
127.0.0.1 at a free port; started by a launcher already (``torchrun`` on several machines,
``WORLD_SIZE`` set), it runs as it is. The training itself is transformers' Trainer (or
TRL's SFTTrainer) under DDP, as torchrun sets it up: this module only launches, checks and
passes a few Python objects between the processes (gloo on the CPU, NCCL on GPUs).
Process 0 alone writes the stage's outputs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from text2sql.io import DataError, atomic_path


def launched_world_size() -> int | None:
    """The number of processes a launcher (torchrun, accelerate) started; None outside one."""
    value = os.environ.get("WORLD_SIZE")
    return int(value) if value else None


def process_problem(key: str, requested: int, *, distributed: bool, cuda_gpus: int,
                    comm_backend: bool, launched: int | None, launched_here: int | None
                    ) -> str | None:
    """Why ``requested`` processes cannot run here (None when they can), saying what to change.

    ``cuda_gpus``: CUDA GPUs this machine has (0: the CPU runs it); ``comm_backend``: the
    collective backend for that device (NCCL, gloo) is in this PyTorch build; ``launched``,
    ``launched_here``: processes a launcher started, in all and on this machine.
    """
    if launched is not None and launched != requested:
        return (f"{key}={requested}, but the launcher started {launched} processes "
                f"(WORLD_SIZE={launched}); set {key}={launched}, the number of processes on "
                "all machines together, so that the run is recorded as it ran")
    if requested == 1:
        return None
    if not distributed:
        return (f"{key}={requested}, but this PyTorch build has no torch.distributed; "
                f"set {key}=1, or install a PyTorch build with distributed support")
    if not comm_backend:
        name = "NCCL" if cuda_gpus else "gloo"
        return (f"{key}={requested}, but this PyTorch build has no {name} backend for the "
                f"processes to exchange gradients; set {key}=1")
    here = launched_here or requested
    if cuda_gpus and here > cuda_gpus:
        return (f"{key}={requested} asks for {here} processes on this machine, but it has "
                f"{cuda_gpus} CUDA GPU{'s' if cuda_gpus > 1 else ''} (one process per GPU); set "
                f"{key} to {cuda_gpus} or fewer")
    return None


def check_processes(key: str, requested: int) -> None:
    """Fail, before any work, when ``requested`` processes cannot run on this machine."""
    import torch

    cuda_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    distributed = torch.distributed.is_available()
    comm_backend = distributed and (torch.distributed.is_nccl_available() if cuda_gpus
                                    else torch.distributed.is_gloo_available())
    here = os.environ.get("LOCAL_WORLD_SIZE")
    problem = process_problem(key, requested, distributed=distributed, cuda_gpus=cuda_gpus,
                              comm_backend=comm_backend, launched=launched_world_size(),
                              launched_here=int(here) if here else None)
    if problem:
        raise DataError(problem)


def torchrun_command(num_processes: int, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run`` running ``argv`` (a script and its arguments)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={num_processes}", "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:0", *argv]


def start_processes(key: str, requested: int) -> None:
    """Check ``requested``; run this script under torchrun when it asks for several processes.

    Outside a launcher with ``requested`` > 1 this process becomes torchrun (``exec``: DVC's
    signals reach it) and never returns. In a process a launcher started, the process
    group is set up (gloo on the CPU, NCCL with this process's GPU) and it returns.
    """
    check_processes(key, requested)
    if requested > 1 and launched_world_size() is None:
        sys.stdout.flush()
        sys.stderr.flush()
        command = torchrun_command(requested, sys.argv)
        os.execv(command[0], command)
    if launched_world_size() is not None:
        stop_with_launcher()
        init_process_group()


def stop_with_launcher(interval_s: float = 1.0) -> None:
    """End this process when the launcher that started it dies.

    torchrun starts each process in a session of its own and forwards SIGTERM and SIGINT,
    but a launcher killed outright (SIGKILL, the OOM killer) leaves its processes training
    on, and process 0 would then write the outputs under a run started again to resume.
    """
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-launcher", daemon=True).start()


def init_process_group() -> None:
    import torch

    if torch.distributed.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        # Resuming, transformers' Trainer loads the optimizer state onto ``args.device``, under
        # DDP on the CPU an indexed ``cpu:<n>``, which torch.load's own CPU rule refuses.
        torch.serialization.register_package(
            99, lambda storage: None,
            lambda storage, location: storage if location.startswith("cpu:") else None)
    torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without a process group)."""
    if "torch" not in sys.modules:
        return 0, 1
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_main_process() -> bool:
    return rank_and_size()[0] == 0


def broadcast_from_main(value: Any) -> Any:
    """Process 0's ``value``, in every process (a picklable object)."""
    rank, size = rank_and_size()
    if size == 1:
        return value
    import torch

    box = [value if rank == 0 else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: Any) -> list[Any] | None:
    """Every process's ``value``, by rank, in process 0; None in the others."""
    rank, size = rank_and_size()
    if size == 1:
        return [value]
    import torch

    gathered: list[Any] | None = [None] * size if rank == 0 else None
    torch.distributed.gather_object(value, gathered, dst=0)
    return gathered


def sum_over_processes(values: list[int]) -> list[int]:
    """Element-wise sums of ``values`` over all processes (counts made by each)."""
    gathered = [values] if rank_and_size()[1] == 1 else _all_gather(values)
    return [sum(column) for column in zip(*gathered, strict=True)]


def folder_from_main(folder: Path) -> Path:
    """Process 0's ``folder`` (small, flat: the built-in model), written to the same path in
    every other process, which need not share a filesystem with it.

    transformers saves a model only in process 0 once a process group is up, so the
    others cannot build their own copy.
    """
    rank, size = rank_and_size()
    if size == 1:
        return folder
    files = broadcast_from_main({p.name: p.read_bytes() for p in sorted(folder.iterdir())}
                                if rank == 0 else None)
    if rank != 0:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
    return folder


def _all_gather(value: Any) -> list[Any]:
    import torch

    gathered: list[Any] = [None] * rank_and_size()[1]
    torch.distributed.all_gather_object(gathered, value)
    return gathered


@contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """Where this process writes a stage's output folder: process 0 the real one (atomically),
    the others a private temporary folder thrown away at the end."""
    if is_main_process():
        with atomic_path(path, is_dir=True) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.rank{rank_and_size()[0]}."))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
