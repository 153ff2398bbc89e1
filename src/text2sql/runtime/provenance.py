"""What a run ran on: package versions, hashes of its code and input data, CPU numerics.

The train stage writes this record beside the adapter (``models/adapter/provenance.json``),
so an adapter found anywhere can be traced back to the code, libraries and data it came from:

    write_provenance(tmp / PROVENANCE_FILE, [TRAIN_FILE], params=params.model_dump())

The code is identified by the md5 of its source files, not by a git commit: a commit
does not exist yet when a run's results are committed with it, and the record must be
the same bytes whenever the same code, data and params run (it is part of the adapter,
whose hash is in ``dvc.lock``). For the same reason it holds no host name, core count or
time stamp. The files are exactly the code the stage declares in ``dvc.yaml``
(:func:`stage_code`): a change to any other file neither reruns the stage nor changes its
output, so the committed ``dvc.lock`` stays what a fresh clone's ``dvc repro`` gives.

Data hashes are the ones DVC uses: the md5 of a file's bytes, and for a folder the md5 of
its sorted ``[{"md5", "relpath"}]`` listing plus ``.dir``. They can be checked against
``dvc.lock`` (``dvc status`` / ``dvc data status``) or ``md5sum``. The record holds no
time stamp or host name, so the same code, data and libraries give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from text2sql import __version__
from text2sql.io import DataError, write_json

PROVENANCE_FILE = "provenance.json"

# The libraries whose versions change what a run produces.
PACKAGES = ("text2sql", "torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo",
            "accelerate", "bitsandbytes", "datasets", "tokenizers", "safetensors", "numpy",
            "vllm", "sqlglot", "dvc", "dvclive")

_CHUNK = 1 << 20


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes (what ``dvc.lock`` records for a file)."""
    h = hashlib.md5()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_md5(path: str | Path) -> tuple[str, int, int]:
    """DVC's hash of a folder (``<md5>.dir``), its number of files and their total size.

    The md5 is taken over the JSON listing ``[{"md5": ..., "relpath": ...}]`` sorted by
    relative path, exactly as dvc-data builds a ``.dir`` object, so it equals the value
    in ``dvc.lock``. Files DVC ignores (``.dvcignore``) are not skipped here.
    """
    root = Path(path)
    entries, size = [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            f = Path(dirpath) / name
            entries.append({"md5": file_md5(f), "relpath": f.relative_to(root).as_posix()})
            size += f.stat().st_size
    entries.sort(key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir", len(entries), size


def data_hash(path: str | Path) -> dict[str, Any]:
    """``{"md5", "size"}`` for a file, ``{"md5", "nfiles", "size"}`` for a folder."""
    p = Path(path)
    if p.is_file():
        return {"md5": file_md5(p), "size": p.stat().st_size}
    if p.is_dir():
        md5, nfiles, size = dir_md5(p)
        return {"md5": md5, "nfiles": nfiles, "size": size}
    raise DataError(f"{p}: input not found, so it cannot be hashed for the run's provenance "
                    "(pass the files and folders the run read)")


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; None where it is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source_md5(package_dir: str | Path | None = None) -> str:
    """md5 of the package's Python sources (``*.py``, by relative path), as a DVC folder hash.

    Compiled caches and other files beside the sources are left out, so the value depends
    on the code alone.
    """
    root = Path(package_dir) if package_dir is not None else Path(__file__).parent
    entries = [{"md5": file_md5(f), "relpath": f.relative_to(root).as_posix()}
               for f in sorted(root.rglob("*.py"))]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def stage_code(stage: str, repo_dir: str | Path = ".") -> dict[str, str] | None:
    """md5 of the code ``stage`` lists as dependencies in ``repo_dir``'s dvc.yaml: each Python
    file, and each package folder under ``src/`` (the :func:`source_md5` of its ``*.py``).

    Exactly the code DVC watches for the stage, so the record changes when, and only
    when, DVC would rerun the stage for its code (DVC ignores the compiled caches too:
    .dvcignore). Returns None when there is no dvc.yaml or it does not declare the stage (a
    stage script run outside the pipeline).
    """
    import yaml

    dvc_yaml = Path(repo_dir) / "dvc.yaml"
    if not dvc_yaml.is_file():
        return None
    declared = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in declared:
        return None
    code: dict[str, str] = {}
    for dep in sorted(str(d) for d in declared[stage].get("deps", [])):
        path = Path(repo_dir) / dep
        if dep.endswith(".py"):
            code[dep] = file_md5(path)
        elif dep.startswith("src/") and path.is_dir():
            code[dep] = source_md5(path)
    return code


def accelerator() -> dict[str, Any]:
    """The device a run used: CUDA device name and versions, or the CPU."""
    info: dict[str, Any] = {"machine": platform.machine()}
    try:
        import torch
    except ImportError:
        return info
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
    else:
        info["device"] = "cpu"
    return info


def collect_provenance(inputs: Iterable[str | Path], *, params: Mapping[str, Any] | None = None,
                       stage: str | None = None,
                       model: Mapping[str, Any] | None = None,
                       repo_dir: str | Path = ".") -> dict[str, Any]:
    """The provenance record of a run of ``stage`` that read ``inputs`` with ``params``.

    Input paths are recorded as given (relative to the repository root, as in dvc.yaml).
    The code is the stage's declared code (:func:`stage_code`); outside a pipeline that
    declares ``stage`` (or with no stage), the whole package's sources instead.
    ``model`` says which base model was named and which checkpoint was loaded (with
    ``load_in_4bit`` Unsloth loads its pre-quantized ``-bnb-4bit`` copy).
    """
    from text2sql.runtime.reproducibility import cpu_numerics

    record: dict[str, Any] = {
        "text2sql": __version__,
        "python": ".".join(platform.python_version_tuple()[:2]),  # the patch level changes no result
        "platform": f"{sys.platform}-{platform.machine()}",
        "packages": package_versions(),
        "accelerator": accelerator(),
        "cpu_numerics": cpu_numerics(),
        "code": (stage and stage_code(stage, repo_dir)) or {"text2sql": source_md5()},
        "inputs": {Path(p).as_posix(): data_hash(Path(repo_dir) / p) for p in inputs},
    }
    if params is not None:
        record["params"] = dict(params)
    if model is not None:
        record["model"] = dict(model)
    return record


def write_provenance(path: str | Path, inputs: Iterable[str | Path], *,
                     params: Mapping[str, Any] | None = None,
                     stage: str | None = None,
                     model: Mapping[str, Any] | None = None,
                     repo_dir: str | Path = ".") -> dict[str, Any]:
    """Collect the provenance record (see :func:`collect_provenance`) and write it atomically."""
    record = collect_provenance(inputs, params=params, stage=stage, model=model,
                                repo_dir=repo_dir)
    write_json(path, record)
    return record
