"""Experiments: a small queue on the built-in model, a readable table, applying the best.

    dvc exp run --queue -n half-epoch -S train.epochs=0.5
    dvc exp run --queue -n short-answers -S infer.max_new_tokens=8
    dvc queue start                    # a background worker runs the queue
    dvc exp show --md --only-changed --drop '<timing columns>'
    dvc exp apply <best>

The second experiment changes an infer param only, so its queued run takes prepare and
train from the baseline (run cache and lock) and reruns infer and evaluate.

DVC's queue passes messages through files, and a worker can die reading one half-written
(JSONDecodeError in .dvc/tmp/exps/celery/dvc-exp-worker-1.out, DVC issue #10428); the
experiments left queued then wait for a new worker. ``dvc exp run --run-all`` then hangs,
so the test starts the worker with ``dvc queue start``, waits for it to exit, and starts
another while experiments are still queued, as a user would.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import TIMINGS, VENV_BIN, copy_of_base_run, dvc, git, report_timings, run
from text2sql.evaluation.report import fmt

EXPERIMENTS = {"half-epoch": ("train", "epochs", 0.5),
               "short-answers": ("infer", "max_new_tokens", 8)}
# Columns that measure time, throughput or memory: they differ between any two runs.
TIMING_COLUMNS = r".*(_s|_mb|seconds)$"
KEY_METRICS = {"metrics/eval.json": "execution_accuracy", "metrics/train.json": "final_loss"}


def exp_rows(repo: Path) -> dict[str, dict]:
    """Experiments of the current baseline from ``dvc exp show --json``: name -> data."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    rows = {}
    for baseline in shown:
        rows[baseline.get("name") or baseline["rev"]] = baseline["data"]
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                rows[rev["name"]] = rev["data"]
    return rows


def param(data: dict, section: str, key: str):
    return data["params"]["params.yaml"]["data"][section][key]


def metric(data: dict, path: str, key: str):
    return data["metrics"][path]["data"][key]


def best_experiment(rows: dict[str, dict]) -> str:
    """Highest execution accuracy, then lowest final training loss."""
    def score(name: str):
        d = rows[name]
        return (-metric(d, "metrics/eval.json", "execution_accuracy"),
                metric(d, "metrics/train.json", "final_loss"), name)
    return min(EXPERIMENTS, key=score)


def worker_state(repo: Path) -> dict:
    """What dvc-task records about the queue's worker process: pid, and returncode at exit."""
    info = repo / ".dvc" / "tmp" / "exps" / "celery" / "dvc-exp-worker-1.json"
    try:
        return json.loads(info.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not started, or being written
        return {}


def run_queue(repo: Path, timeout: float = 900) -> int:
    """``dvc queue start``; wait until the worker exits; start another while experiments are
    still queued (see the module docstring). Returns the number of restarts."""
    deadline = time.monotonic() + timeout
    restarts = 0
    while True:
        previous = worker_state(repo).get("pid")
        dvc("queue", "start", "-j", "1", cwd=repo)
        while True:
            state = worker_state(repo)
            if state.get("pid") not in (None, previous) and state.get("returncode") is not None:
                break
            assert time.monotonic() < deadline, f"the queue did not finish in {timeout} s"
            time.sleep(2)
        status = dvc("queue", "status", cwd=repo).stdout
        if "Queued" not in status and "Running" not in status:
            return restarts
        restarts += 1
        assert restarts <= 3, f"the queue worker keeps stopping early:\n{status}"


@pytest.fixture(scope="module")
def queued(tmp_path_factory) -> Path:
    repo = copy_of_base_run(tmp_path_factory, "experiments")
    for name, (section, key, value) in EXPERIMENTS.items():
        dvc("exp", "run", "--queue", "-n", name, "-S", f"{section}.{key}={value}", cwd=repo)
    start = time.perf_counter()
    restarts = run_queue(repo)
    TIMINGS[f"dvc queue start: 2 queued experiments, reduced ({restarts} worker restarts)"] = \
        time.perf_counter() - start
    report_timings("experiments")
    return repo


@pytest.mark.slow
def test_queue_runs_every_experiment(queued):
    rows = exp_rows(queued)
    base = rows["main"]
    for name, (section, key, value) in EXPERIMENTS.items():
        assert name in rows, f"experiment {name} missing from dvc exp show: {sorted(rows)}"
        data = rows[name]
        assert param(data, section, key) == value
        for path, key_metric in KEY_METRICS.items():
            assert isinstance(metric(data, path, key_metric), (int, float)), (name, path)
    # Half the epochs, half the steps; an infer-only change leaves training as it was.
    assert metric(rows["half-epoch"], "metrics/train.json", "steps") == \
        metric(base, "metrics/train.json", "steps") // 2
    assert metric(rows["half-epoch"], "metrics/train.json", "final_loss") != \
        metric(base, "metrics/train.json", "final_loss")
    assert metric(rows["short-answers"], "metrics/train.json", "final_loss") == \
        metric(base, "metrics/train.json", "final_loss")
    assert metric(rows["short-answers"], "metrics/infer.json", "n") == \
        metric(base, "metrics/infer.json", "n")
    assert dvc("queue", "status", cwd=queued).stdout.count("Success") == len(EXPERIMENTS)


def readme_exp_show_command() -> list[str]:
    """The manual's `dvc exp show` command for reviewing experiments (README.md or
    docs/remote-and-review.md), as arguments."""
    import shlex

    from tests.manual import manual_lines

    line = next(line for line in manual_lines()
                if line.startswith("dvc exp show --only-changed"))
    return shlex.split(line.split("  #")[0])


@pytest.mark.slow
def test_exp_show_has_readable_columns(queued):
    table = dvc("exp", "show", "--md", "--only-changed", "--drop", TIMING_COLUMNS,
                "--precision", "4", cwd=queued).stdout
    header = table.splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    for _, (section, key, _) in EXPERIMENTS.items():
        assert f"{section}.{key}" in columns, columns
    assert "final_loss" in columns and "steps" in columns
    assert not [c for c in columns if re.search(TIMING_COLUMNS, c)], columns
    # Unchanged params and metrics are left out: the table stays narrow.
    assert "train.learning_rate" not in columns and "eval_n" not in columns
    assert len(columns) <= 20, columns
    for name in EXPERIMENTS:
        assert name in table


@pytest.mark.slow
def test_readme_exp_show_fits_100_columns(queued):
    """The terminal table of the manual's command: every changed param, the headline metrics."""
    args = readme_exp_show_command()
    assert args[:3] == ["dvc", "exp", "show"]
    table = dvc(*args[1:], cwd=queued, COLUMNS="100").stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 100, table
    for _, (section, key, _) in EXPERIMENTS.items():
        assert f"{section}.{key}" in table, table
    assert "final_loss" in table and "Experiment" in table
    for name in EXPERIMENTS:
        assert name in table


@pytest.mark.slow
def test_apply_best_then_report_against_the_baseline(queued):
    rows = exp_rows(queued)
    best = best_experiment(rows)
    section, key, value = EXPERIMENTS[best]
    dvc("exp", "apply", best, cwd=queued)

    params = yaml.safe_load((queued / "params.yaml").read_text())
    assert params[section][key] == value
    for path, key_metric in KEY_METRICS.items():
        applied = json.loads((queued / path).read_text())[key_metric]
        assert applied == metric(rows[best], path, key_metric)
    assert dvc("status", cwd=queued).stdout.strip() == "Data and pipelines are up to date."

    # Commit the best, then the review report shows the change against the baseline.
    git("add", "-A", cwd=queued)
    git("commit", "-qm", f"apply {best}", cwd=queued)
    report = run([str(VENV_BIN / "text2sql"), "report", "--base", "HEAD~1", "--head", "HEAD"],
                 queued).stdout
    old = param(rows["main"], section, key)
    assert f"| params.yaml | {section}.{key} | {fmt(old)} | {fmt(value)} |" in report
    changed_metrics = report.split("### Metrics")[1].split("<details>")[0]
    if best == "half-epoch":
        assert "| metrics/train.json | steps |" in changed_metrics
        assert "| metrics/train.json | final_loss |" in changed_metrics
    else:
        assert "| metrics/infer.json | generated_tokens |" in changed_metrics
