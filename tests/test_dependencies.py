"""Every package the code imports is declared in pyproject.toml (not just installed by luck)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import tomllib

from tests.conftest import REPO


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    declared = {_canonical(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0])
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
                ["dependencies"]}
    owners = packages_distributions()
    undeclared = {}
    for path in sorted((REPO / "src" / "text2sql").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "text2sql":
                    continue
                dists = {_canonical(d) for d in owners.get(top, [top])}
                if not dists & declared:
                    undeclared.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    assert not undeclared, f"imported but not in pyproject.toml dependencies: {undeclared}"
