"""The committed dvc.lock comes from a run of the committed code and params."""

from __future__ import annotations

import json
import platform
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


@pytest.mark.parametrize("stage,out", [("train", "models/adapter"), ("align", "models/aligned")])
def test_committed_adapter_was_made_with_the_installed_libraries(stage, out):
    """The adapter's provenance names library versions, which no stage declares as a dep
    (uv.lock would rerun training on any new dependency). So a version change leaves
    `dvc status` clean while a fresh clone trains another adapter: this catches it before
    the commit. Checked when the workspace holds the committed adapter (not an experiment's)."""
    import yaml

    from text2sql.runtime.provenance import PROVENANCE_FILE, dir_md5, package_versions

    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"][stage]
    committed = next(o["md5"] for o in lock["outs"] if o["path"] == out)
    if not (REPO / out).is_dir() or dir_md5(REPO / out)[0] != committed:
        pytest.skip(f"{out} is not the committed one here (not pulled, or an experiment's)")
    record = json.loads((REPO / out / PROVENANCE_FILE).read_text())
    recorded = {**record["packages"], "python": record["python"]}
    installed = {**package_versions(record["packages"]),
                 "python": ".".join(platform.python_version_tuple()[:2])}
    changed = {name: (was, installed[name]) for name, was in recorded.items()
               if was != installed[name]}
    assert not changed, (f"{out} was made with other library versions than the installed "
                         f"ones (recorded, installed): {changed}; run `uv run dvc repro` and "
                         "commit dvc.lock with the metrics")
