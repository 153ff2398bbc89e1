"""Same code, data and params give the same results; each run records what it ran on.

The end-to-end test runs the real pipeline twice on the CPU (the shared reduced run,
then ``dvc repro --force`` in a copy) and compares the outputs and ``dvc.lock`` byte for
byte. Wall-clock time, throughput and memory, which no seed can fix, are written apart
(``metrics/runtime/``, tracked by neither git nor DVC).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import TIMINGS, base_run, copy_of_base_run, dvc, report_timings
from text2sql.io import DataError
from text2sql.runtime.provenance import (
    collect_provenance,
    data_hash,
    dir_md5,
    file_md5,
    source_md5,
    write_provenance,
)

# Outputs compared after the second run: folders are compared file by file.
COMPARED = ["data/prepared", "data/predictions", "data/evaluation", "metrics/eval.json",
            "metrics/eval_breakdown.json", "metrics/train.json", "metrics/infer.json",
            "metrics/prepare.json", "metrics/train_live", "metrics/eval_report.md",
            "metrics/eval_by_difficulty.csv", "models/adapter/provenance.json",
            "models/adapter/adapter_model.safetensors", "models/adapter/tokenizer.json",
            "models/adapter/base_model/model.safetensors"]


def comparable(path: Path) -> object:
    """The file parsed (JSON, JSONL), to name the first differing field; else its bytes."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
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
        + "\nIf a field measures time, throughput or memory, name it so that "
          "text2sql.io.RUNTIME_FIELD matches it; otherwise seed or order what produces it.")
    assert compared >= 10
    assert (first / "dvc.lock").read_text() == (second / "dvc.lock").read_text()
    # The runtime measurements were written, beside the results.
    runtime = json.loads((second / "metrics/runtime/train.json").read_text())
    assert runtime["wall_s"] > 0


@pytest.mark.slow
def test_adapter_config_is_reproducible(two_runs):
    first, second = two_runs
    name = "models/adapter/adapter_config.json"
    assert (first / name).read_text() == (second / name).read_text()


@pytest.mark.slow
def test_train_stage_records_provenance(two_runs):
    """models/adapter/provenance.json: versions, code and the training data's DVC hash."""
    first, second = two_runs
    path = first / "models/adapter/provenance.json"
    record = json.loads(path.read_text())
    lock = yaml.safe_load((first / "dvc.lock").read_text())["stages"]["train"]
    train_dep = next(d for d in lock["deps"] if d["path"] == "data/prepared/train.jsonl")
    assert record["inputs"]["data/prepared/train.jsonl"]["md5"] == train_dep["md5"]
    assert record["packages"]["torch"] == metadata.version("torch")
    code_deps = {d["path"]: d["md5"] for d in lock["deps"]
                 if d["path"].endswith(".py") or d["path"].startswith("src/")}
    # package folders among them, hashed as DVC hashes a folder (the .py files; .dvcignore)
    assert any(md5.endswith(".dir") for path, md5 in code_deps.items())
    assert record["code"] == code_deps  # exactly the code DVC watches for the stage
    assert record["cpu_numerics"]["threads"] == 2
    # The second run happened after the first was committed: the same record, byte for byte.
    assert (second / "models/adapter/provenance.json").read_bytes() == path.read_bytes()


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


def test_provenance_records_versions_code_and_data(small_repo):
    record = collect_provenance(["data/train.jsonl", "data/db"], params={"epochs": 1.0},
                                repo_dir=small_repo)
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["dvc"] == metadata.version("dvc")
    assert record["code"]["text2sql"] == source_md5()
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
    before = json.loads((out / "a.json").read_text())["inputs"]["data/db"]["md5"]
    assert record["inputs"]["data/db"]["md5"] != before


def test_provenance_code_is_what_dvc_yaml_declares_for_the_stage(small_repo):
    """The record (part of the adapter, hashed in dvc.lock) names the stage's declared code
    only: editing another module must neither rerun the stage nor change its output, or a
    fresh clone's `dvc repro` would give another dvc.lock than the committed one."""
    (small_repo / "stages").mkdir()
    (small_repo / "stages" / "s.py").write_text("import helper\n")
    (small_repo / "helper.py").write_text("x = 1\n")
    (small_repo / "other.py").write_text("y = 1\n")
    (small_repo / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: python stages/s.py\n"
        "    deps: [data/db, stages/s.py, helper.py]\n")
    code = collect_provenance(["data/db"], stage="s", repo_dir=small_repo)["code"]
    assert code == {"helper.py": file_md5(small_repo / "helper.py"),
                    "stages/s.py": file_md5(small_repo / "stages" / "s.py")}
    (small_repo / "other.py").write_text("y = 2\n")  # not a dependency: same record
    assert collect_provenance(["data/db"], stage="s", repo_dir=small_repo)["code"] == code
    (small_repo / "helper.py").write_text("x = 2\n")  # a dependency: DVC reruns, record changes
    assert collect_provenance(["data/db"], stage="s", repo_dir=small_repo)["code"] != code
    # a stage dvc.yaml does not declare (a script run outside the pipeline): the whole package
    other = collect_provenance(["data/db"], stage="nope", repo_dir=small_repo)["code"]
    assert other == {"text2sql": source_md5()}


def test_source_md5_reads_python_sources_only(tmp_path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = source_md5(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00")
    assert source_md5(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert source_md5(tmp_path / "pkg") != before


def test_provenance_missing_input(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: input not found"):
        collect_provenance(["nope.jsonl"], repo_dir=tmp_path)
