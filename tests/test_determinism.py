"""Same code, data and params give the same results; each run records what it ran on.

The end-to-end test runs the real pipeline twice on the CPU (the shared reduced run,
then ``dvc repro --force`` in a copy) and compares the outputs byte for byte, except
the fields declared in ``TIMING_FIELDS``: wall-clock time, throughput and memory,
which no seed can fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import TIMINGS, base_run, copy_of_base_run, dvc, report_timings
from text2sql.io import DataError
from text2sql.provenance import (collect_provenance, data_hash, dir_md5, file_md5,
                                 write_provenance)

# Fields that measure time, throughput or memory, wherever they appear (metrics/*.json,
# prediction and result rows, plot tables). Anything else must be identical.
TIMING_FIELDS = frozenset({
    "wall_s", "train_runtime_s", "tokens_per_s", "real_tokens_per_s",  # metrics/train.json
    "peak_memory_mb",
    "sequences_per_s", "questions_per_s", "generated_tokens_per_s",  # metrics/infer.json
    "generate_s", "load_s",
    "seconds",  # per row of data/predictions/eval.jsonl and data/evaluation/results.jsonl
    "timestamp",  # DVCLive plot tables
})

# Outputs compared after the second run: folders are compared file by file.
COMPARED = ["data/prepared", "data/predictions", "data/evaluation", "metrics",
            "models/adapter/adapter_model.safetensors", "models/adapter/tokenizer.json",
            "models/adapter/base_model/model.safetensors"]


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if k not in TIMING_FIELDS}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def comparable(path: Path) -> object:
    """The file's content with timing fields removed (JSON, JSONL, TSV/CSV), else its bytes."""
    if path.suffix == ".json":
        return without_timing(json.loads(path.read_text()))
    if path.suffix == ".jsonl":
        return [without_timing(json.loads(line)) for line in path.read_text().splitlines()]
    if path.suffix in (".tsv", ".csv"):
        rows = list(csv.DictReader(io.StringIO(path.read_text()),
                                   delimiter="\t" if path.suffix == ".tsv" else ","))
        return without_timing(rows)
    return path.read_bytes()


def files_under(root: Path, rel: str) -> list[str]:
    p = root / rel
    if p.is_file():
        return [rel]
    return sorted(f.relative_to(root).as_posix() for f in p.rglob("*") if f.is_file())


def first_difference(a: object, b: object, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    if isinstance(a, bytes):
        return f"{where}: bytes differ (md5 {hashlib.md5(a).hexdigest()} vs " \
               f"{hashlib.md5(b).hexdigest()})"
    return f"{where}: {str(a)[:200]!r} != {str(b)[:200]!r}"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    first = base_run(tmp_path_factory)
    second = copy_of_base_run(tmp_path_factory, "repro-force")
    start = time.perf_counter()
    dvc("repro", "--force", cwd=second)
    TIMINGS["dvc repro --force (reduced run)"] = time.perf_counter() - start
    report_timings("determinism")
    return first, second


@pytest.mark.slow
def test_repro_force_twice_gives_identical_outputs(two_runs):
    first, second = two_runs
    compared, differences = 0, []
    for rel in COMPARED:
        names = files_under(first, rel)
        assert names, f"{rel}: the pipeline wrote nothing there"
        assert names == files_under(second, rel), f"{rel}: different files after the rerun"
        for name in names:
            a, b = comparable(first / name), comparable(second / name)
            compared += 1
            if a != b:
                differences.append(first_difference(a, b, name))
    assert not differences, (
        "dvc repro --force twice on the CPU gave different outputs:\n  "
        + "\n  ".join(differences)
        + "\nIf a field measures time, throughput or memory, declare it in TIMING_FIELDS "
          "(tests/test_determinism.py); otherwise seed or order what produces it.")
    assert compared >= 10
    # The timing fields were there (so the test did strip something) and did vary.
    train = json.loads((first / "metrics/train.json").read_text())
    assert "wall_s" in train and train["wall_s"] > 0


@pytest.mark.slow
def test_adapter_config_is_reproducible(two_runs):
    first, second = two_runs
    name = "models/adapter/adapter_config.json"
    assert (first / name).read_text() == (second / name).read_text()


@pytest.mark.slow
def test_train_stage_records_provenance(two_runs):
    """models/adapter/provenance.json: versions, commit and the training data's DVC hash."""
    first, second = two_runs
    path = first / "models/adapter/provenance.json"
    record = json.loads(path.read_text())
    lock = yaml.safe_load((first / "dvc.lock").read_text())["stages"]["train"]
    train_dep = next(d for d in lock["deps"] if d["path"] == "data/prepared/train.jsonl")
    assert record["inputs"]["data/prepared/train.jsonl"]["md5"] == train_dep["md5"]
    assert record["packages"]["torch"] == metadata.version("torch")
    assert len(record["git"]["commit"]) == 40
    again = json.loads((second / "models/adapter/provenance.json").read_text())
    assert again["inputs"] == record["inputs"] and again["packages"] == record["packages"]
    # The second run happened after the first was committed: it records that newer commit.
    assert len(again["git"]["commit"]) == 40


@pytest.mark.slow
def test_data_hashes_match_dvc_lock(tmp_path_factory):
    """provenance.json's data hashes are DVC's: they can be checked against dvc.lock."""
    repo = base_run(tmp_path_factory)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    prepared = next(o for o in lock["prepare"]["outs"] if o["path"] == "data/prepared")
    assert dir_md5(repo / "data/prepared")[0] == prepared["md5"]
    train_dep = next(d for d in lock["train"]["deps"] if d["path"] == "data/prepared/train.jsonl")
    assert file_md5(repo / "data/prepared/train.jsonl") == train_dep["md5"]
    sample = next(d for d in lock["prepare"]["deps"] if d["path"] == "data/sample")
    assert data_hash(repo / "data/sample")["md5"] == sample["md5"]


# --- provenance, on a small git repository ------------------------------------------

@pytest.fixture
def small_repo(tmp_path) -> Path:
    (tmp_path / "data" / "db").mkdir(parents=True)
    (tmp_path / "data" / "train.jsonl").write_text('{"q": "a"}\n')
    (tmp_path / "data" / "db" / "a.sqlite").write_bytes(b"\x00\x01binary")
    (tmp_path / "data" / "db" / "b.txt").write_text("b\n")
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "x"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_provenance_records_versions_commit_and_data(small_repo):
    record = collect_provenance(["data/train.jsonl", "data/db"], params={"epochs": 1.0},
                                repo_dir=small_repo)
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["dvc"] == metadata.version("dvc")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=small_repo, capture_output=True,
                          text=True).stdout.strip()
    assert record["git"] == {"commit": head, "dirty": False, "changed": []}
    data = (small_repo / "data" / "train.jsonl").read_bytes()
    assert record["inputs"]["data/train.jsonl"] == {"md5": hashlib.md5(data).hexdigest(),
                                                    "size": len(data)}
    folder = record["inputs"]["data/db"]
    assert folder["nfiles"] == 2 and folder["md5"].endswith(".dir")
    assert record["params"] == {"epochs": 1.0}
    assert record["accelerator"]["device"]


def test_provenance_is_byte_identical_and_tracks_changes(small_repo, tmp_path_factory):
    out = tmp_path_factory.mktemp("prov")
    write_provenance(out / "a.json", ["data/db"], repo_dir=small_repo)
    write_provenance(out / "b.json", ["data/db"], repo_dir=small_repo)
    assert (out / "a.json").read_bytes() == (out / "b.json").read_bytes()  # no clock, no host

    (small_repo / "data" / "db" / "b.txt").write_text("changed\n")
    record = write_provenance(out / "c.json", ["data/db"], repo_dir=small_repo)
    assert record["git"]["dirty"] is True and record["git"]["changed"] == ["data/db/b.txt"]
    before = json.loads((out / "a.json").read_text())["inputs"]["data/db"]["md5"]
    assert record["inputs"]["data/db"]["md5"] != before


def test_provenance_outside_git_and_missing_input(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    record = collect_provenance(["x.txt"], repo_dir=tmp_path)
    assert record["git"]["commit"] is None
    with pytest.raises(DataError, match="nope.jsonl: input not found"):
        collect_provenance(["nope.jsonl"], repo_dir=tmp_path)
