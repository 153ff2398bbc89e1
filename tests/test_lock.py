"""The committed dvc.lock comes from a run of the committed code and params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_dvc_lock_matches_code_data_and_params():
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "status", "--json"], cwd=REPO, capture_output=True,
                          text=True, check=True)
    stale = {}
    for stage, changes in json.loads(proc.stdout or "{}").items():
        for change in changes:
            if not isinstance(change, dict):
                continue
            params = change.get("changed params")
            # Deps made by an earlier stage may simply be absent (a fresh clone without
            # `dvc pull`); source code, sample data and params must match the lock.
            deps = {path: how for path, how in (change.get("changed deps") or {}).items()
                    if not path.startswith(("data/prepared", "data/predictions", "models/"))}
            if params or deps:
                stale[stage] = {"params": params, "deps": deps}
    assert not stale, (f"dvc.lock is stale for {stale}: run `uv run dvc repro` and commit "
                       "dvc.lock with the metrics")
