"""End to end: the real ``dvc repro`` in a temporary copy of the repository.

Uses the shared reduced run of ``tests/pipeline_run.py`` (the same stages and code on a
few dozen examples); the full default run is what the README's first command does.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.pipeline_run import REDUCED, copy_of_base_run, dvc, git

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return copy_of_base_run(tmp_path_factory, "e2e")


def test_repro_writes_every_declared_output(pipeline):
    for path in ["data/prepared/train.jsonl", "data/prepared/eval.jsonl",
                 "models/adapter/adapter_config.json", "models/adapter/README.md",
                 "data/predictions/eval.jsonl", "data/evaluation/results.jsonl", "dvc.lock",
                 "metrics/train_live/plots/metrics/loss.tsv"]:
        assert (pipeline / path).is_file(), path
    n_eval = REDUCED["prepare"]["max_eval_examples"]
    ev = json.loads((pipeline / "metrics/eval.json").read_text())
    assert ev["n"] == n_eval
    for key in ("execution_accuracy", "normalized_match", "valid_sql_rate"):
        assert isinstance(ev[key], float) and 0.0 <= ev[key] <= 1.0
    tr = json.loads((pipeline / "metrics/train.json").read_text())
    assert tr["final_loss"] > 0 and tr["backend"] in ("unsloth", "peft") and tr["device"] == "cpu"
    # Time, throughput and memory: beside the results, not in them (not tracked by git or DVC).
    assert not [k for k in tr if k.endswith(("_s", "_mb"))], tr
    runtime = json.loads((pipeline / "metrics/runtime/train.json").read_text())
    assert runtime["tokens_per_s"] > 0 and runtime["wall_s"] > 0
    assert "metrics/runtime" not in git("status", "--porcelain", "--ignored=no", cwd=pipeline)
    predictions = [json.loads(line) for line in
                   (pipeline / "data/predictions/eval.jsonl").read_text().splitlines()]
    assert len(predictions) == n_eval and all("sql" in p and "raw" in p for p in predictions)


def test_second_repro_is_up_to_date(pipeline):
    start = time.perf_counter()
    out = dvc("repro", cwd=pipeline).stdout
    elapsed = time.perf_counter() - start
    assert "Running stage" not in out and "up to date" in out.lower()
    assert elapsed < 30  # the promise is about 3 s; this only catches a rerun of real work


def test_exp_run_retrains_and_metrics_diff_shows_it(pipeline):
    dvc("exp", "run", "-S", "train.epochs=2", cwd=pipeline)
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=pipeline).stdout)
    steps = diff["metrics/train.json"]["steps"]
    assert steps["new"] == 2 * steps["old"]
    assert "final_loss" in diff["metrics/train.json"]
    # infer and evaluate reran on the new adapter (on this tiny run the scores may not move)
    lock = git("diff", "--", "dvc.lock", cwd=pipeline)
    assert "data/predictions" in lock and "data/evaluation" in lock


def test_mistyped_param_is_an_error_naming_the_key(pipeline):
    proc = dvc("exp", "run", "-S", "train.epoch=3", cwd=pipeline, check=False)
    assert proc.returncode != 0
    assert "train.epoch" in proc.stdout + proc.stderr
