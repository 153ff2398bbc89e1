"""The package's layout rules, checked on every file's imports (those inside functions too).

The subpackages are layered, lowest first; a module imports only from its own layer or a
lower one, so the SQL, data and evaluation code can be read, tested and reused without the
model stack:

    io, params, presets            the base: errors, atomic writes, typed params
    sql                            parsing, guards, the SQLite runner, PostgreSQL's guards
    data                           sources, linking, values, prompts, prepare
    evaluation                     comparison, scoring, report
    runtime                        numerics, processes, provenance, native child processes
    modeling                       the tiny model, LoRA, precision
    inference                      transformers, llama.cpp, predict, voting
    training                       SFT, batching, checkpoints, alignment
    export                         merge, GGUF, Modelfile
    ask                            questions from outside the pipeline, live databases
    serve, mcp_server, commands, cli   the entry points

The base, sql, data and evaluation never import the torch stack, not even inside a function;
no module imports at its top level what it could import when a function runs (nothing of
the torch stack loads when a module is imported); nothing in ``src/`` imports ``stages``,
``bench`` or ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = [{"io", "params", "presets", "__init__"}, {"sql"}, {"data"}, {"evaluation"},
          {"runtime"}, {"modeling"}, {"inference"}, {"training"}, {"export"}, {"ask"},
          {"serve", "mcp_server", "commands", "cli"}]
TORCH_FREE = {"io", "params", "presets", "__init__", "sql", "data", "evaluation"}
TORCH_STACK = {"torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes",
               "accelerate", "torchao", "xformers", "vllm"}
NEVER = {"stages", "bench", "tests"}


def unit_of(path: Path, package: Path) -> str:
    """``sql`` for src/text2sql/sql/parse.py, ``io`` for src/text2sql/io.py."""
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def layer_of(unit: str) -> int:
    for k, names in enumerate(LAYERS):
        if unit in names:
            return k
    raise AssertionError(f"{unit}: not in any layer of tests/test_layout.py; add it to LAYERS")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at top level) for each import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks run no code
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "text2sql":  # from text2sql import sql -> text2sql.sql
                found += [(f"text2sql.{a.name}", node.lineno, id(node) in top)
                          for a in node.names]
            else:
                found.append((node.module, node.lineno, id(node) in top))
    return found


def type_checking_lines(path: Path) -> set[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


def violations(package: Path) -> list[str]:
    """Every broken rule in the package under ``package`` (src/text2sql), one line each."""
    found = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(path, package)
        where = path.relative_to(package.parent.parent).as_posix()
        typing_only = type_checking_lines(path)
        for module, line, top in imports(path):
            root = module.split(".")[0]
            if root in NEVER:
                found.append(f"{where}:{line}: imports {module} (src/ never imports {root})")
            if root in TORCH_STACK and line not in typing_only:
                if unit in TORCH_FREE:
                    found.append(f"{where}:{line}: imports {module}, but {unit} is torch-free")
                elif top:
                    found.append(f"{where}:{line}: imports {module} at its top level; import "
                                 "it inside the function that needs it")
            if root == "text2sql" and len(module.split(".")) > 1:
                target = module.split(".")[1]
                if target == "__version__":
                    continue
                if layer_of(target) > layer_of(unit):
                    found.append(f"{where}:{line}: {unit} imports {module}, a higher layer "
                                 f"({target}); imports point down (tests/test_layout.py)")
    return found


def test_the_package_keeps_its_layout_rules():
    broken = violations(REPO / "src" / "text2sql")
    assert not broken, "\n".join(broken)


def test_every_subpackage_is_in_a_layer():
    package = REPO / "src" / "text2sql"
    for path in package.iterdir():
        if path.name.startswith(("_", ".")) and path.name != "__init__.py":
            continue
        if path.is_dir() or path.suffix == ".py":
            layer_of(path.stem)


@pytest.mark.parametrize("where, code, expected", [
    ("sql/parse.py", "def f():\n    import torch\n", "sql is torch-free"),
    ("data/prompts.py", "from text2sql.inference.hf import generate\n", "a higher layer"),
    ("evaluation/x.py", "from text2sql import training\n", "a higher layer"),
    ("inference/hf.py", "import transformers\n", "at its top level"),
    ("training/sft.py", "from bench.bench_train import x\n", "src/ never imports bench"),
])
def test_a_broken_rule_is_found_and_named(tmp_path, where, code, expected):
    """The checker on a small tree with one broken rule: it reports that file and line."""
    package = tmp_path / "src" / "text2sql"
    for unit in ("sql", "data", "evaluation", "inference", "training"):
        (package / unit).mkdir(parents=True, exist_ok=True)
    (package / "io.py").write_text("import os\n")
    (package / where).write_text(code)
    broken = violations(package)
    assert len(broken) == 1 and broken[0].startswith(f"src/text2sql/{where}:")
    assert expected in broken[0]
    (package / where).write_text("from text2sql.io import DataError\n")  # a good import
    assert violations(package) == []
