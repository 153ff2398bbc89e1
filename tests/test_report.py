"""The review report (``text2sql report``) on a real git + DVC repository with two commits,
and the pull-request workflow that posts it."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import REPO, VENV_BIN, dvc, git, run
from text2sql.cli import build_parser
from text2sql.evaluation.report import fmt_change, make_report

WORKFLOW = REPO / ".github" / "workflows" / "pr-report.yaml"

DVC_YAML = """\
stages:
  train:
    cmd: python -c "print('metrics are written by the test')"
    params: [train]
    metrics:
      - metrics/eval.json:
          cache: false
      - metrics/train.json:
          cache: false
    plots:
      - metrics/loss.tsv:
          cache: false
          x: step
          y: loss
plots:
  - metrics/by_difficulty.csv:
      template: bar_horizontal
      x: execution_accuracy
      y: difficulty
"""


def write_run(repo: Path, epochs: int, accuracy: float, loss: list[float], wall: float) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"epochs": epochs, "learning_rate": 0.003}}))
    (repo / "metrics" / "eval.json").write_text(json.dumps(
        {"execution_accuracy": accuracy, "normalized_match": 0.1, "n": 40}))
    (repo / "metrics" / "train.json").write_text(json.dumps(
        {"final_loss": loss[-1], "wall_s": wall, "peak_memory_mb": 1200.5}))
    (repo / "metrics" / "loss.tsv").write_text(
        "step\tloss\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(loss)))
    (repo / "metrics" / "by_difficulty.csv").write_text(
        f"difficulty,execution_accuracy\neasy,{accuracy * 2}\nhard,{accuracy / 2}\n")


@pytest.fixture(scope="module")
def two_commits(tmp_path_factory) -> Path:
    """Commit 1: epochs 1, accuracy 0.2. Commit 2 (main): epochs 2, accuracy 0.35."""
    repo = tmp_path_factory.mktemp("report") / "repo"
    (repo / "metrics").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    write_run(repo, epochs=1, accuracy=0.2, loss=[3.0, 2.5, 2.25], wall=30.0)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "one epoch", cwd=repo)
    write_run(repo, epochs=2, accuracy=0.35, loss=[3.0, 2.0, 1.5, 1.25], wall=61.0)
    git("commit", "-qam", "two epochs", cwd=repo)
    return repo


def section(text: str, title: str) -> str:
    return text.split(f"### {title}")[1].split("###")[0]


def test_report_shows_params_metrics_plots_and_their_change(two_commits, tmp_path):
    plots = tmp_path / "plots"
    text = make_report("HEAD~1", "HEAD", two_commits, output=tmp_path / "report.md",
                       plots_dir=plots)
    assert (tmp_path / "report.md").read_text() == text
    base = git("rev-parse", "--short", "HEAD~1", cwd=two_commits).strip()
    head = git("rev-parse", "--short", "HEAD", cwd=two_commits).strip()
    assert f"`HEAD~1` (`{base}`)" in text and f"`HEAD` (`{head}`)" in text

    metrics = section(text, "Metrics")
    changed = metrics.split("<details>")[0]
    assert "| metrics/eval.json | execution_accuracy | 0.2 | 0.35 | +0.15 (+75.0%) |" in changed
    assert "| metrics/train.json | final_loss | 2.25 | 1.25 | -1 (-44.4%) |" in changed
    # Timing and memory are folded away, unchanged metrics too; nothing is lost.
    assert "wall_s" not in changed and "normalized_match" not in changed
    assert "| metrics/train.json | wall_s | 30.0 | 61.0 | +31 (+103.3%) |" in metrics
    assert "| metrics/eval.json | normalized_match | 0.1 | 0.1 |" in metrics
    assert "| metrics/train.json | peak_memory_mb | 1200.5 | 1200.5 | 0 |" in metrics
    # dvc's own table is included verbatim.
    md = dvc("metrics", "diff", "HEAD~1", "HEAD", "--md", cwd=two_commits).stdout.strip()
    assert md.splitlines()[2] in metrics

    params = section(text, "Params")
    assert params.index("| params.yaml | train.epochs | 1 | 2 |") < params.index("<details>")
    assert "| params.yaml | train.learning_rate | 0.003 | 0.003 |" in params.split("<details>")[1]

    # The plots diff: one Vega-Lite spec per plot with both revisions' data, and the HTML.
    specs = sorted(plots.glob("*.vl.json"))
    assert [p.name for p in specs] == ["metrics_by_difficulty_csv.vl.json",
                                       "metrics_loss_tsv.vl.json"]
    loss = json.loads((plots / "metrics_loss_tsv.vl.json").read_text())
    points = {(v["rev"], int(v["step"]), float(v["loss"])) for v in loss["data"]["values"]}
    assert ("HEAD~1", 2, 2.25) in points and ("HEAD", 3, 1.25) in points
    assert (plots / "html" / "index.html").is_file()
    shown = section(text, "Plots")
    assert "plots/metrics_loss_tsv" in shown and "plots/html/index.html" in shown
    assert str(tmp_path) not in shown  # links relative to the report, as CML publishes them


def test_report_of_the_workspace_by_the_command(two_commits, tmp_path):
    """`text2sql report --base main`: uncommitted results against the last commit."""
    (two_commits / "metrics" / "eval.json").write_text(json.dumps(
        {"execution_accuracy": 0.5, "normalized_match": 0.1, "n": 40}))
    try:
        out = run([str(VENV_BIN / "text2sql"), "report", "--base", "main"], two_commits).stdout
        assert "## text2sql report: `workspace` against `main`" in out
        assert "| metrics/eval.json | execution_accuracy | 0.35 | 0.5 | +0.15 (+42.9%) |" in out
        assert "No param changed." in out

        target = tmp_path / "out" / "report.md"
        proc = run([str(VENV_BIN / "text2sql"), "report", "--base", "main", "-o", str(target)],
                   two_commits)
        assert proc.stdout == "" and target.read_text() == out
    finally:
        git("checkout", "--", "metrics/eval.json", cwd=two_commits)


def test_unknown_base_is_a_clear_error(two_commits):
    proc = subprocess.run([str(VENV_BIN / "text2sql"), "report", "--base", "no-such-branch"],
                          cwd=two_commits, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown git revision 'no-such-branch'" in proc.stderr
    assert "git fetch" in proc.stderr


def test_change_formatting():
    assert fmt_change(0.2, 0.35) == "+0.15 (+75.0%)"
    assert fmt_change(0, 3) == "+3"
    assert fmt_change(None, 1) == "added" and fmt_change(1, None) == "removed"
    assert fmt_change("peft", "unsloth") == "changed" and fmt_change(2, 2) == "0"


def test_pull_request_workflow_posts_this_report():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
    assert "pull_request" in triggers
    assert workflow["permissions"]["pull-requests"] == "write"
    steps = workflow["jobs"]["report"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("actions/checkout") for u in uses)
    assert any(u.startswith("iterative/setup-cml") for u in uses)
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # the base branch must be there to diff

    script = "\n".join(s.get("run", "") for s in steps)
    assert "dvc repro" in script and "cml comment" in script
    report_line = next(line for line in script.splitlines() if "text2sql report" in line)
    argv = shlex.split(report_line.replace('"$BASE"', "origin/main"))
    argv = argv[argv.index("text2sql") + 1:]
    args = build_parser().parse_args(argv)  # the flags the workflow uses exist
    assert args.command == "report" and args.base == "origin/main"
    assert args.output == Path("report.md") and args.plots_dir is not None
    assert "--publish report.md" in script or "report.md" in script.split("cml comment")[1]
