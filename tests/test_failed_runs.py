"""A fresh clone reproduces the committed run, and a failed experiment loses nothing.

    git clone ... && dvc repro                      # the committed dvc.lock, bit for bit
    dvc exp run -S +train.epoch=3                   # a typo: stopped by the check stage
    git checkout HEAD -- params.yaml dvc.lock metrics && dvc checkout --force   # README's recovery

The check stage runs before any other (every stage depends on its output) and validates
all of params.yaml, so a bad param stops DVC before it deletes any stage's outputs. A run
that fails later (here: every example too long for train.max_seq_length) has lost the
outputs DVC deleted before it ran the stage; README's one recovery command brings back
the last committed state from the cache that the clone's own ``dvc repro`` filled.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.pipeline_run import TIMINGS, base_run, dvc, git, report_timings, run

RECOVER = "git checkout HEAD -- params.yaml dvc.lock metrics && dvc checkout --force"


def snapshot(repo: Path) -> dict[str, bytes]:
    """Every file of the outputs a failed run could lose."""
    files = {}
    for root in ("models/adapter", "metrics", "data/prepared", "data/predictions"):
        for f in sorted((repo / root).rglob("*")):
            if f.is_file() and "runtime" not in f.parts:
                files[f.relative_to(repo).as_posix()] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the committed reduced run (no outputs, no cache), reproduced."""
    origin = base_run(tmp_path_factory)
    repo = tmp_path_factory.mktemp("clone") / "repo"
    run(["git", "clone", "-q", str(origin), str(repo)], origin)
    start = time.perf_counter()
    dvc("repro", cwd=repo)
    TIMINGS["dvc repro in a fresh clone (reduced)"] = time.perf_counter() - start
    report_timings("failed runs")
    return repo


@pytest.mark.slow
def test_fresh_clone_reproduces_the_committed_lock_and_metrics(clone):
    changed = git("status", "--porcelain", cwd=clone)
    assert changed == "", f"dvc repro in a fresh clone changed committed files:\n{changed}\n" + \
        git("diff", "--", "dvc.lock", "metrics", cwd=clone)[-4000:]


@pytest.mark.slow
def test_a_mistyped_param_deletes_nothing(clone):
    before = snapshot(clone)
    proc = dvc("exp", "run", "-S", "+train.epoch=3", cwd=clone, check=False)
    assert proc.returncode != 0
    assert "unknown key 'train.epoch'" in proc.stdout + proc.stderr
    assert snapshot(clone) == before, "a failed check must leave every output as it was"
    run(["bash", "-c", RECOVER], clone)
    assert git("status", "--porcelain", cwd=clone) == ""


@pytest.mark.slow
def test_readme_recovery_after_a_run_that_failed_midway(clone):
    before = snapshot(clone)
    proc = dvc("exp", "run", "-S", "train.max_seq_length=16", cwd=clone, check=False)
    assert proc.returncode != 0 and "max_seq_length=16" in proc.stdout + proc.stderr
    assert not (clone / "models/adapter").exists(), "DVC deleted the outputs of the failed stage"
    run(["bash", "-c", RECOVER], clone)
    assert snapshot(clone) == before
    assert git("status", "--porcelain", cwd=clone) == ""
    assert dvc("status", cwd=clone).stdout.strip() == "Data and pipelines are up to date."


def test_readme_gives_the_recovery_command(repo_root):
    assert RECOVER in (repo_root / "README.md").read_text()
