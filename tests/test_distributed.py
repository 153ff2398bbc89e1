"""Data-parallel stages: torchrun, DDP on the CPU (gloo), the global batch, bad process counts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_run import copy_source, env, run
from text2sql.distributed import process_problem
from text2sql.io import DataError, write_jsonl
from text2sql.params import TrainParams, parse_section

# 32 examples, 8 a step: 4 steps, each logged. 1 process accumulates 2 batches of 4 per step,
# 2 processes take one batch of 4 each.
TRAIN = {"epochs": 1.0, "logging_steps": 1, "batch_size": 4, "global_batch_size": 8,
         "num_processes": 2}
INFER = {"max_new_tokens": 16, "batch_size": 2, "num_processes": 2}


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


@pytest.fixture(scope="module")
def repo(tmp_path_factory, prepared_rows) -> Path:
    """A copy of the repository set for 2 processes, with prepared data (no prepare run)."""
    repo = copy_source(tmp_path_factory.mktemp("distributed"), {"train": TRAIN, "infer": INFER})
    write_jsonl(repo / "data/prepared/train.jsonl", prepared_rows["train"][:32])
    write_jsonl(repo / "data/prepared/eval.jsonl", prepared_rows["eval"][:8])
    return repo


def _losses(live_dir: Path) -> list[tuple[int, float]]:
    lines = (live_dir / "plots/metrics/loss.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [(int(r.split("\t")[header.index("step")]), float(r.split("\t")[header.index("loss")]))
            for r in lines[1:]]


@pytest.fixture(scope="module")
def one_process_curve(tmp_path_factory, prepared_rows, repo) -> list[tuple[int, float]]:
    """The same training in this process: 1 process, the same global batch."""
    from text2sql.params import load_params
    from text2sql.training import train

    params = load_params("train", repo / "params.yaml").model_copy(update={"num_processes": 1})
    out = tmp_path_factory.mktemp("one-process")
    metrics = train(params, prepared_rows["train"][:32], out / "adapter", live_dir=out / "live")
    assert (metrics["gradient_accumulation_steps"], metrics["global_batch_size"]) == (2, 8)
    return _losses(out / "live")


def _check_two_process_run(repo: Path, stdout: str, curve: list[tuple[int, float]]) -> None:
    """The loss curve of the 1-process run, and the outputs written once, by process 0."""
    metrics = json.loads((repo / "metrics/train.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["global_batch_size"] == 8
    assert metrics["gradient_accumulation_steps"] == 1 and metrics["steps"] == 4
    losses = _losses(repo / "metrics/train_live")
    assert [s for s, _ in losses] == [s for s, _ in curve] == [1, 2, 3, 4]
    assert [v for _, v in losses] == pytest.approx([v for _, v in curve], abs=1e-3)
    # Written once, by process 0: one report line, no other process's folder left behind.
    assert stdout.count("-> models/adapter") == 1
    assert (repo / "models/adapter/adapter_model.safetensors").is_file()
    assert not [p for p in (repo / "models").iterdir() if p.name.startswith(".adapter")]
    assert [p.name for p in (repo / "checkpoints/train").iterdir()] == ["fingerprint.json"]
    provenance = json.loads((repo / "models/adapter/provenance.json").read_text())
    assert provenance["cpu_numerics"]["threads"] == 1  # 2 processes share the 2 threads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_two_simulated_machines_train_as_one(repo, one_process_curve):
    """The README's command for several machines, on loopback: one torchrun per machine, one
    process each. (``python stages/train.py`` starts torchrun itself: the same code as the
    inference test below runs.)"""
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
    assert "-> models/adapter" not in outputs[1][0]  # node 1 writes nothing
    _check_two_process_run(repo, outputs[0][0] + outputs[1][0], one_process_curve)


@pytest.mark.slow
def test_two_processes_infer_byte_identical_predictions(repo, request):
    if not (repo / "models/adapter/adapter_config.json").is_file():  # run alone
        shutil.copytree(request.getfixturevalue("tiny_adapter"), repo / "models/adapter")
    predictions = repo / "data/predictions/eval.jsonl"
    run([sys.executable, "stages/infer.py"], repo, timeout=600)
    two = predictions.read_bytes()
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("num_processes: 2", "num_processes: 1"))
    try:
        run([sys.executable, "stages/infer.py"], repo, timeout=600)
    finally:
        (repo / "params.yaml").write_text(params)
    assert predictions.read_bytes() == two
    assert len(two.splitlines()) == 8


@pytest.mark.cuda
def test_more_processes_than_gpus_is_an_error_before_any_work(repo):
    import torch

    gpus = torch.cuda.device_count()
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("num_processes: 2",
                                                     f"num_processes: {gpus + 1}"))
    try:
        proc = run([sys.executable, "stages/train.py"], repo, check=False, timeout=300)
    finally:
        (repo / "params.yaml").write_text(params)
    assert proc.returncode != 0
    assert f"set train.num_processes to {gpus} or fewer" in proc.stderr
    assert "torch.distributed.run" not in proc.stderr  # stopped before launching anything
