"""A GGUF export answers with the same bits on any x86-64 machine (issue 22).

llama.cpp is built for one fixed ISA (pyproject.toml) and loads with no extra buffer types, so
the export of the committed adapter gives the same GGUF files (sha256) and the same answers on
an AMD EPYC and on an Intel Xeon with AMX. This runs the real export stage on a reduced set
(the first 64 evaluation questions, the three GGUF formats) in a scratch folder, and compares
the files' hashes and each format's EX and same-SQL share with ``tests/data/export_reference.json``,
recorded by the same run on another machine.

The reference belongs to the committed adapter (its md5 in dvc.lock); after a change that
retrains it, record it again, where the new dvc.lock was made:

    uv run python tests/test_export_reference.py --update
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "export_reference.json"
FORMATS = ["gguf-f16", "gguf-q8_0", "gguf-q4_k_m"]
N_QUESTIONS = 64
INPUTS = ("models/aligned", "data/prepared", "data/predictions", "data/sample")


def committed_adapter_md5() -> str:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["align"]
    return next(o["md5"] for o in lock["outs"] if o["path"] == "models/aligned")


def reduced_export(workdir: Path) -> dict:
    """The export stage on the committed outputs, reduced; what the reference records."""
    from text2sql.runtime.model_card import file_sha256

    for name in INPUTS:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).symlink_to(REPO / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["export"].update(formats=FORMATS, max_eval_examples=N_QUESTIONS)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "export.py")], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((workdir / "metrics" / "export.json").read_text())
    return {
        "adapter_md5": committed_adapter_md5(),
        "n": metrics["n"],
        "accuracy": {k: v for k, v in sorted(metrics.items())
                     if k.startswith(("execution_accuracy_", "same_sql_"))},
        "sha256": {p.name: file_sha256(p)
                   for p in sorted((workdir / "models" / "export").glob("*.gguf"))},
    }


@pytest.mark.dvc
def test_the_reduced_export_gives_the_recorded_files_and_answers(tmp_path):
    from text2sql.runtime.provenance import dir_md5

    committed = committed_adapter_md5()
    if not (REPO / "models" / "aligned").is_dir() or \
            dir_md5(REPO / "models" / "aligned")[0] != committed:
        pytest.skip("models/aligned is not the committed one here (run `uv run dvc repro`)")
    reference = json.loads(REFERENCE.read_text())
    assert reference["adapter_md5"] == committed, (
        "tests/data/export_reference.json was recorded for another adapter; record it again "
        "with the committed one: uv run python tests/test_export_reference.py --update")
    measured = reduced_export(tmp_path)
    assert measured["sha256"] == reference["sha256"], (
        f"the GGUF files differ from the ones recorded on {reference['recorded_on']}")
    assert measured == {k: v for k, v in reference.items() if k != "recorded_on"}


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    import tempfile

    import platform

    from text2sql.inference.llama_cpp import build_features

    with tempfile.TemporaryDirectory() as tmp:
        recorded = reduced_export(Path(tmp))
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    recorded["recorded_on"] = (f"{cpu}, llama.cpp built for "
                               f"{' '.join(sorted(build_features()))}")
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(recorded, indent=2) + "\n")
    print(f"{REFERENCE}: {json.dumps(recorded['accuracy'])}")
