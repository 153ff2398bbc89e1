"""Each stage of dvc.yaml declares every package module its script can run (imports followed
through, those inside functions included), so DVC reruns it when any of them changes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] == "text2sql"}


def package_files_used_by(script: Path) -> set[str]:
    """``src/text2sql/*.py`` files ``script`` imports, directly or through each other."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_modules(todo.pop()):
            parts = name.split(".")
            for k in range(len(parts), 1, -1):
                f = REPO / "src" / Path(*parts[:k]).with_suffix(".py")
                if f.is_file():
                    if f not in seen:
                        seen.add(f)
                        todo.append(f)
                    break
    return {f.relative_to(REPO).as_posix() for f in seen}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_the_code_it_runs(stage):
    deps = set(STAGES[stage]["deps"])
    missing = package_files_used_by(REPO / "stages" / f"{stage}.py") - deps
    assert not missing, f"dvc.yaml: stage {stage} runs {sorted(missing)} but does not list them"


def test_stages_that_run_sql_declare_the_databases():
    for stage in ("prepare", "align", "infer", "evaluate"):
        assert "${prepare.path}" in STAGES[stage]["deps"], stage
