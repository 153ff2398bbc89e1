"""Pinned CPU numerics: the stages' kernels do not depend on the machine's instruction set.

Cross-machine bit-exactness itself is checked by CI (`.ci/run`: `dvc repro` on a clean
clone must leave `git status` clean) on whichever machine CI runs; these tests check that
the pins take effect in a fresh process and say so when they come too late.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from text2sql.runtime.reproducibility import CPU_THREADS, PINNED_ENV

x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="the pins are for x86-64 CPUs")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=True)


@pytest.mark.slow
@x86_only
def test_pins_take_effect_before_torch_is_imported():
    proc = run_python("import json; from text2sql.runtime.reproducibility import pin_cpu_numerics; "
                      "record = pin_cpu_numerics(); import torch; "
                      "record['deterministic'] = torch.are_deterministic_algorithms_enabled(); "
                      "print(json.dumps(record))")
    record = json.loads(proc.stdout.splitlines()[-1])
    assert record["deterministic"] is True  # part of the CPU numerics the results rest on
    assert record["aten_capability"] == "AVX2"  # not the machine's AVX-512
    assert record["threads"] == CPU_THREADS
    assert record["mkl_cbwr"] == "COMPATIBLE" and record["onednn_max_cpu_isa"] == "AVX2"
    assert "torch was imported before" not in proc.stderr


def test_on_a_gpu_deterministic_algorithms_stay_off():
    """Unsloth refuses torch's varlen attention under them (attention_dispatch.py:611).

    No GPU here: torch.cuda.is_available is replaced in the child process, the one place
    the real GPU cannot exist.
    """
    proc = run_python("import torch; torch.cuda.is_available = lambda: True; "
                      "from text2sql.runtime.reproducibility import pin_cpu_numerics; pin_cpu_numerics(); "
                      "print(torch.are_deterministic_algorithms_enabled())")
    assert proc.stdout.splitlines()[-1] == "False"


@pytest.mark.slow
@x86_only
def test_a_late_pin_says_the_run_may_not_reproduce():
    proc = run_python("import torch; from text2sql.runtime.reproducibility import pin_cpu_numerics; "
                      "pin_cpu_numerics()")
    assert "torch was imported before the CPU numerics were pinned" in proc.stderr


def test_training_and_inference_stages_pin_first(repo_root):
    """Each stage that runs torch pins the numerics before it imports anything heavy."""
    for stage in ("train", "infer"):
        source = (repo_root / "stages" / f"{stage}.py").read_text()
        body = source.split("def main(", 1)[1]
        first_call = body.index("pin_cpu_numerics(")
        heavy = [body.find(f"from text2sql.{m} import") for m in ("training", "inference")]
        assert all(pos == -1 or pos > first_call for pos in heavy), stage
