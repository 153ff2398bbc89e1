"""End to end: the real ``dvc repro`` in a temporary copy of the repository.

A reduced configuration (300 training examples, 1 epoch) keeps it to about a minute;
the full default run is what the README's first command does.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.pipeline_copy import SMALL, copy_repo, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("pipeline"), SMALL)
    run(["dvc", "repro"], repo)
    return repo


def test_repro_writes_every_declared_output(pipeline):
    for path in ["data/prepared/train.jsonl", "data/prepared/eval.jsonl",
                 "models/adapter/adapter_config.json", "data/predictions/eval.jsonl",
                 "data/evaluation/results.jsonl", "dvc.lock"]:
        assert (pipeline / path).is_file(), path
    ev = json.loads((pipeline / "metrics/eval.json").read_text())
    assert ev["n"] == 48
    for key in ("execution_accuracy", "exact_match", "valid_sql_rate"):
        assert isinstance(ev[key], float) and 0.0 <= ev[key] <= 1.0
    tr = json.loads((pipeline / "metrics/train.json").read_text())
    assert tr["final_loss"] > 0 and tr["tokens_per_s"] > 0 and tr["wall_s"] > 0
    predictions = [json.loads(line) for line in
                   (pipeline / "data/predictions/eval.jsonl").read_text().splitlines()]
    assert len(predictions) == 48 and all("sql" in p and "raw" in p for p in predictions)


def test_second_repro_is_up_to_date_and_fast(pipeline):
    start = time.perf_counter()
    out = run(["dvc", "repro"], pipeline).stdout
    elapsed = time.perf_counter() - start
    assert "up to date" in out.lower()
    assert "Running stage" not in out
    assert elapsed < 30  # the promise is <= 3 s; this only catches a rerun of real work


def test_exp_run_changes_train_and_eval_metrics(pipeline):
    run(["git", "add", "-A"], pipeline)
    run(["git", "commit", "-qm", "baseline run"], pipeline)
    run(["dvc", "exp", "run", "-S", "train.epochs=2"], pipeline)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], pipeline).stdout)
    assert "metrics/train.json" in diff and "steps" in diff["metrics/train.json"]
    steps = diff["metrics/train.json"]["steps"]
    assert steps["new"] == 2 * steps["old"]
    assert "metrics/eval.json" in diff


def test_mistyped_param_is_an_error_naming_the_key(pipeline):
    proc = run(["dvc", "exp", "run", "-S", "train.epoch=3"], pipeline, check=False)
    assert proc.returncode != 0
    assert "train.epoch" in proc.stdout + proc.stderr
