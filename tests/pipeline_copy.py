"""Make a throw-away copy of this repository to run the real ``dvc`` pipeline in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """The environment with this interpreter's folder first on PATH (stages run ``python``)."""
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e.setdefault("GIT_AUTHOR_NAME", "test")
    e.setdefault("GIT_AUTHOR_EMAIL", "test@example.invalid")
    e.setdefault("GIT_COMMITTER_NAME", "test")
    e.setdefault("GIT_COMMITTER_EMAIL", "test@example.invalid")
    e["DVC_NO_ANALYTICS"] = "1"
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_repo(dest: Path, param_overrides: dict[str, dict] | None = None) -> Path:
    """Copy the tracked and unignored files of this repo to ``dest`` as a fresh git repo.

    Pipeline outputs and dvc.lock are left behind, so the copy runs from scratch.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    skip = ("dvc.lock", "metrics/", ".dvc/cache", ".dvc/tmp")
    for rel in filter(None, files):
        if rel.startswith(skip) or not (REPO / rel).is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if param_overrides:
        params_file = dest / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        for section, values in param_overrides.items():
            params[section].update(values)
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


# A reduced configuration: the same stages and code, a fraction of the data and training.
SMALL = {
    "prepare": {"max_train_examples": 300, "max_eval_examples": 48},
    "train": {"epochs": 1.0},
}
