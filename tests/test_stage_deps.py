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


def code_units(files: set[str]) -> set[str]:
    """What dvc.yaml lists for those files: a top-level module as itself, a module of a
    subpackage as the subpackage's folder (``src/text2sql/sql``)."""
    return {f if len(Path(f).parts) == 3 else Path(*Path(f).parts[:3]).as_posix() for f in files}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_the_code_it_runs_and_no_more(stage):
    declared = {d for d in STAGES[stage]["deps"] if str(d).startswith("src/")}
    used = code_units(package_files_used_by(REPO / "stages" / f"{stage}.py"))
    assert not used - declared, (f"dvc.yaml: stage {stage} runs {sorted(used - declared)} "
                                 "but does not list them")
    assert not declared - used, (f"dvc.yaml: stage {stage} lists {sorted(declared - used)}, "
                                 "which its script never imports (a rerun for nothing)")


def test_code_dependencies_are_package_folders():
    """About a dozen lines of code deps in all, not a hand-kept list of every module."""
    for stage, spec in STAGES.items():
        for dep in spec["deps"]:
            if str(dep).startswith("src/text2sql/"):
                path = REPO / dep
                assert path.is_dir() or len(Path(dep).parts) == 3, (stage, dep)


def test_compiled_caches_are_not_hashed_by_dvc():
    ignored = (REPO / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored and "*.pyc" in ignored


def test_stages_that_run_sql_declare_the_databases():
    for stage in ("prepare", "align", "infer", "evaluate"):
        assert "${prepare.path}" in STAGES[stage]["deps"], stage
