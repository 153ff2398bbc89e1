"""One reduced run of the real pipeline, shared by the remote, experiments and determinism tests.

The first test that asks for it copies the repository's source (no outputs, no dvc.lock)
into a temporary git repository, shrinks the run through params.yaml (a few dozen
examples, short answers), runs ``dvc repro`` and commits the result. Every test then
works on its own copy of that repository (:func:`copy_of_base_run`), so one pipeline
run serves them all and no test sees another's changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# The same stages and code on a fraction of the data: 48 training examples (6 steps per
# epoch), 8 evaluation questions, answers cut at 16 tokens.
REDUCED = {
    "prepare": {"max_train_examples": 48, "max_eval_examples": 8},
    "train": {"epochs": 1.0, "logging_steps": 2},
    "infer": {"max_new_tokens": 16},
}

# Wall-clock seconds of the shared steps, printed by the tests for the closing note.
TIMINGS: dict[str, float] = {}

_base: Path | None = None


def env(repo: Path, **extra: str) -> dict[str, str]:
    """Environment for ``dvc``/``git`` in ``repo``: the venv first on PATH (stages run
    ``python``), the copy's own ``src`` first on PYTHONPATH (so it runs the code it was
    copied with, not the editable install), a git identity, no analytics."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_"))}
    e["PATH"] = f"{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(repo / "src")
    e.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
             GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid",
             DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="false")
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, *, check: bool = True, timeout: float = 600,
        **extra_env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; on failure (with ``check``) fail with its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(cwd, **extra_env), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` failed in {cwd} ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, timeout: float = 600,
        **extra_env: str) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "dvc"), *args], cwd, check=check, timeout=timeout, **extra_env)


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd).stdout


def declared_outputs(dvc_yaml: Path) -> set[str]:
    """Paths of every stage's outs, metrics and plots in ``dvc_yaml``."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    paths = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                paths.add(next(iter(entry)) if isinstance(entry, dict) else entry)
    return {p.rstrip("/") for p in paths}


def copy_source(dest: Path, overrides: dict[str, dict] = REDUCED) -> Path:
    """Copy the repository's tracked and unignored files, minus pipeline outputs, to ``dest``
    as a fresh git repository (branch main) with ``overrides`` applied to params.yaml."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    outputs = declared_outputs(REPO / "dvc.yaml")
    skip = ("dvc.lock", ".dvc/cache", ".dvc/tmp", ".dvc/config.local")
    for rel in filter(None, listed):
        if rel.startswith(skip) or any(rel == o or rel.startswith(o + "/") for o in outputs):
            continue
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in overrides.items():
        unknown = set(values) - set(params[section])
        assert not unknown, f"params.yaml has no {section}.{unknown}: update tests/pipeline_run.py"
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "source", cwd=dest)
    return dest


def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed reduced pipeline run (made once per test session; do not modify it)."""
    global _base
    if _base is None:
        repo = copy_source(tmp_path_factory.mktemp("base-run"))
        start = time.perf_counter()
        dvc("repro", cwd=repo)
        TIMINGS["dvc repro (reduced run)"] = time.perf_counter() - start
        git("add", "-A", cwd=repo)
        git("commit", "-qm", "reduced pipeline run", cwd=repo)
        _base = repo
    return _base


def copy_of_base_run(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A private copy of the base run's repository: git history, DVC cache and outputs."""
    base = base_run(tmp_path_factory)
    dest = tmp_path_factory.mktemp(name) / "repo"
    # .dvc/tmp holds locks, the state database and experiment queues: per repository.
    shutil.copytree(base, dest, symlinks=True,
                    ignore=lambda d, names: ["tmp"] if Path(d) == base / ".dvc" else [])
    return dest


_reported: set[str] = set()


def report_timings(label: str) -> None:
    """Print the durations measured since the last call (shown with ``pytest -s`` or ``-rA``)."""
    for key, seconds in TIMINGS.items():
        if key not in _reported:
            _reported.add(key)
            print(f"[{label}] {key}: {seconds:.1f} s")
