"""Data-parallel stages: torchrun, DDP on the CPU (gloo), the global batch, bad process counts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import base_run, copy_of_base_run, dvc, env, run
from text2sql.io import DataError
from text2sql.params import TrainParams, parse_section
from text2sql.runtime.distributed import process_problem


def test_global_batch_size_sets_the_accumulation_for_any_process_count():
    for processes, accumulation in ((1, 4), (2, 2), (4, 1)):
        params = parse_section(TrainParams, {"batch_size": 4, "global_batch_size": 16,
                                             "num_processes": processes}, "train")
        assert params.accumulation_steps == accumulation
        assert params.effective_batch_size == 16
    params = parse_section(TrainParams, {"batch_size": 4, "gradient_accumulation_steps": 3,
                                         "num_processes": 2}, "train")
    assert params.effective_batch_size == 24  # empty: per device x processes x accumulation
    with pytest.raises(DataError, match=r"train.global_batch_size=12 is not a multiple of "
                                        r"train.batch_size x train.num_processes = 4 x 2 = 8"):
        parse_section(TrainParams, {"batch_size": 4, "global_batch_size": 12,
                                    "num_processes": 2}, "train")


def test_process_counts_that_cannot_run_say_what_to_change():
    ok = dict(distributed=True, cuda_gpus=0, comm_backend=True, launched=None, launched_here=None)
    assert process_problem("train.num_processes", 2, **ok) is None  # the CPU: gloo
    assert process_problem("train.num_processes", 2, **{**ok, "cuda_gpus": 2}) is None
    problem = process_problem("train.num_processes", 4, **{**ok, "cuda_gpus": 2})
    assert "has 2 CUDA GPUs" in problem and "set train.num_processes to 2 or fewer" in problem
    # Two machines of 2 GPUs: 4 processes in all, 2 here.
    assert process_problem("train.num_processes", 4, **{**ok, "cuda_gpus": 2, "launched": 4,
                                                        "launched_here": 2}) is None
    problem = process_problem("infer.num_processes", 1, **{**ok, "launched": 4})
    assert "launcher started 4 processes" in problem and "set infer.num_processes=4" in problem
    problem = process_problem("train.num_processes", 2, **{**ok, "distributed": False})
    assert "no torch.distributed" in problem and "set train.num_processes=1" in problem
    problem = process_problem("train.num_processes", 2, **{**ok, "cuda_gpus": 1,
                                                          "comm_backend": False})
    assert "no NCCL backend" in problem
    assert process_problem("train.num_processes", 1, **{**ok, "distributed": False}) is None


# The shared reduced pipeline run (tests/pipeline_run.py) trained 48 examples in one process,
# 8 a step (6 steps, loss logged every 2) and predicted 8 questions: the one-process reference.
TWO_PROCESSES = {"num_processes": 2, "batch_size": 4, "global_batch_size": 8}


def _losses(repo: Path) -> list[tuple[int, float]]:
    lines = (repo / "metrics/train_live/plots/metrics/loss.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [(int(r.split("\t")[header.index("step")]), float(r.split("\t")[header.index("loss")]))
            for r in lines[1:]]


def _set_params(repo: Path, section: str, values: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_two_simulated_machines_train_as_one(tmp_path_factory):
    """docs/distributed.md's command for several machines, on loopback: one torchrun per
    machine, one process each, 4 examples each a step. (``python stages/train.py`` starting
    torchrun itself is the same code as the inference test's.)"""
    base = base_run(tmp_path_factory)
    repo = copy_of_base_run(tmp_path_factory, "two-machines")
    _set_params(repo, "train", TWO_PROCESSES)
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                               f"--node-rank={rank}", "--nproc-per-node=1",
                               "--master-addr=127.0.0.1", f"--master-port={port}",
                               "stages/train.py"],
                              cwd=repo, env=env(repo), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (out, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, f"{out[-3000:]}\n{err[-5000:]}"
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert (metrics["num_processes"], metrics["global_batch_size"]) == (2, 8)
    assert (metrics["gradient_accumulation_steps"], metrics["steps"]) == (1, 6)
    losses, reference = _losses(repo), _losses(base)
    assert [s for s, _ in losses] == [s for s, _ in reference] == [2, 4, 6]
    assert [v for _, v in losses] == pytest.approx([v for _, v in reference], abs=1e-3)
    # Written once, by process 0 (machine 0); no other process's folder left behind.
    assert "-> models/adapter" in outputs[0][0] and "-> models/adapter" not in outputs[1][0]
    assert not [p for p in (repo / "models").iterdir() if p.name.startswith(".adapter")]
    assert [p.name for p in (repo / "checkpoints/train").iterdir()] == ["fingerprint.json"]
    provenance = json.loads((repo / "models/adapter/provenance.json").read_text())
    assert provenance["cpu_numerics"]["threads"] == 1  # 2 processes share the 2 threads


@pytest.mark.slow
def test_two_processes_infer_byte_identical_predictions(tmp_path_factory):
    """`dvc exp run -S infer.num_processes=2`: the same predictions file, byte for byte, so
    DVC does not even rerun the evaluation."""
    base = base_run(tmp_path_factory)
    repo = copy_of_base_run(tmp_path_factory, "two-process-infer")
    out = dvc("exp", "run", "-S", "infer.num_processes=2", cwd=repo).stdout
    predictions = "data/predictions/eval.jsonl"
    assert (repo / predictions).read_bytes() == (base / predictions).read_bytes()
    assert "Stage 'evaluate' didn't change, skipping" in out
    assert "Running stage 'infer'" in out


@pytest.mark.cuda
@pytest.mark.slow  # runs a reduced DVC pipeline first (copy_of_base_run)
def test_more_processes_than_gpus_is_an_error_before_any_work(tmp_path_factory):
    import torch

    repo = copy_of_base_run(tmp_path_factory, "too-many-processes")
    gpus = torch.cuda.device_count()
    _set_params(repo, "train", {"num_processes": gpus + 1})
    proc = run([sys.executable, "stages/train.py"], repo, check=False, timeout=300)
    assert proc.returncode != 0
    assert f"set train.num_processes to {gpus} or fewer" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr  # stopped before launching anything
