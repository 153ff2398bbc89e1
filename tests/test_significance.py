"""Paired significance of a change in execution accuracy: McNemar's exact test and the
bootstrap, on per-question results scored on a real SQLite file, and in the review report
of a real git + DVC repository whose results.jsonl lives in the DVC cache."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from tests.pipeline_run import dvc, git
from text2sql.evaluation.report import make_report, read_results
from text2sql.evaluation.scoring import (
    EvalConfig,
    EvalItem,
    as_dict,
    score_items,
    summarize,
)
from text2sql.evaluation.significance import (
    bootstrap_interval,
    compare_runs,
    mcnemar_exact,
    paired_bootstrap_difference,
)


def test_mcnemar_exact_against_the_binomial_by_hand():
    assert mcnemar_exact(9, 1) == 2 * (1 + 10) / 2 ** 10  # 0.0215
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1)  # two-sided
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(6, 0) == 2 / 64
    assert mcnemar_exact(5, 0) == 2 / 32 > 0.05  # five fixed, none broken: not yet real


def test_bootstrap_interval_is_fixed_and_near_the_normal_one():
    correct = [k % 4 != 0 for k in range(400)]  # 0.75
    low, high = bootstrap_interval(correct)
    assert (low, high) == bootstrap_interval(correct)  # fixed seed
    half = 1.96 * math.sqrt(0.75 * 0.25 / 400)
    assert low < 0.75 < high
    assert abs((high - low) / 2 - half) < 0.006
    assert bootstrap_interval([]) == (0.0, 0.0)
    assert bootstrap_interval([True] * 10) == (1.0, 1.0)


def test_paired_bootstrap_uses_the_pairing():
    base = [k % 2 == 0 for k in range(200)]
    assert paired_bootstrap_difference(base, base) == (0.0, 0.0)
    head = list(base)
    for k in range(1, 40, 2):  # 20 wrong answers fixed, none broken
        head[k] = True
    low, high = paired_bootstrap_difference(base, head)
    assert 0 < low < 0.1 < high < 0.2
    # Unpaired, the two intervals (each about +-0.07) overlap; paired, the difference is clear.
    assert bootstrap_interval(base)[1] > bootstrap_interval(head)[0]
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_difference(base, head[:-1])


def test_compare_runs_pairs_by_id_and_leaves_gold_errors_out():
    base = {"a": True, "b": False, "c": False, "d": None, "e": True}
    head = {"a": False, "b": True, "c": True, "d": True, "f": True}
    q = compare_runs(base, head)
    assert q.n == 3 and q.fixed == ["b", "c"] and q.broken == ["a"]
    assert (q.base_accuracy, q.head_accuracy, q.difference) == (0.3333, 0.6667, 0.3334)
    assert q.p_value == 1.0 and (q.only_base, q.only_head) == (1, 2)


# --- real per-question files ---------------------------------------------------------

GOLD = [("SELECT name FROM member WHERE age > 25", "SELECT name FROM member"),
        ("SELECT count(*) FROM member", "SELECT count(id) + 1 FROM member"),
        ("SELECT city FROM member ORDER BY age", "SELECT city FROM member ORDER BY name DESC")]


@pytest.fixture(scope="module")
def club(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("club") / "club.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city TEXT);
        INSERT INTO member VALUES (1, 'Ann', 30, 'Oslo'), (2, 'Bob', 25, 'Rome'),
                                  (3, 'Cy', 20, 'Oslo'), (4, 'Di', 41, 'Bern');
    """)
    conn.commit()
    conn.close()
    return path


def score_run(db: Path, right: set[int]) -> list:
    """30 questions scored for real: question k answered right iff k is in ``right``."""
    items = []
    for k in range(30):
        gold, wrong = GOLD[k % len(GOLD)]
        items.append(EvalItem(f"q{k:02d}", "club", str(db), f"question {k}", gold,
                              gold if k in right else wrong))
    items.append(EvalItem("broken-gold", "club", str(db), "?", "SELECT x FROM nowhere", "SELECT 1"))
    return score_items(items, EvalConfig(workers=1, progress=False))


def results_file(db: Path, right: set[int], out: Path) -> Path:
    """The results.jsonl of :func:`score_run`, as the evaluate stage writes it."""
    scored = score_run(db, right)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(as_dict(r)) + "\n" for r in scored))
    return out


BASE_RIGHT = set(range(12))  # 12 of 30
HEAD_RIGHT = set(range(1, 23))  # 22 of 30: 11 fixed (12..22), 1 broken (0)

DVC_YAML = """\
stages:
  evaluate:
    cmd: python -c "import os, shutil; os.makedirs('data/evaluation', exist_ok=True); shutil.copy('run.jsonl', 'data/evaluation/results.jsonl')"
    deps: [run.jsonl]
    outs: [data/evaluation]
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, club) -> Path:
    repo = tmp_path_factory.mktemp("paired") / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for right, message in ((BASE_RIGHT, "base"), (HEAD_RIGHT, "head")):
        results_file(club, right, repo / "run.jsonl")
        dvc("repro", "-q", cwd=repo)
        git("add", "-A", cwd=repo)
        git("commit", "-qm", message, cwd=repo)
    return repo


def test_breakdown_gains_the_interval_of_the_runs_accuracy(club):
    m = summarize(score_run(club, HEAD_RIGHT))
    assert m["gold_errors"] == 1 and m["n"] == 30
    assert m["execution_accuracy"] == round(22 / 30, 4)
    assert m["execution_accuracy_ci95_low"] < m["execution_accuracy"] < \
        m["execution_accuracy_ci95_high"]
    assert (m["execution_accuracy_ci95_low"], m["execution_accuracy_ci95_high"]) == \
        bootstrap_interval([k in HEAD_RIGHT for k in range(30)])


def test_report_pairs_the_questions_of_two_revisions(two_runs):
    # The base revision's results.jsonl is only in the DVC cache (the workspace has head's).
    text = make_report("HEAD~1", "HEAD", two_runs)
    part = text.split("### Per question")[1].split("### Params")[0]
    assert "paired on 30 questions (gold errors left out)" in part
    assert "| execution accuracy | 0.4000 | 0.7333 | +0.3333 |" in part
    assert "Fixed **11**, broken **1**: McNemar's exact test p = 0.006348" in part
    assert f"{mcnemar_exact(11, 1):.4g}" == "0.006348"
    assert "a real change at the 5% level" in part
    ci = paired_bootstrap_difference([k in BASE_RIGHT for k in range(30)],
                                     [k in HEAD_RIGHT for k in range(30)])
    assert f"{ci[0]:+.4f} to {ci[1]:+.4f}" in part and ci[0] > 0
    fixed = part.split("Fixed (11)")[1].split("</details>")[0]
    assert "| q12 | question 12 |" in fixed and "| q00 |" not in fixed
    assert "| q00 | question 0 |" in part.split("Broken (1)")[1]


def test_report_of_the_workspace_and_a_missing_run(two_runs, tmp_path):
    text = make_report("HEAD", None, two_runs)  # the workspace holds head's results
    assert "Fixed **0**, broken **0**" in text and "within the noise" in text
    text = make_report("HEAD", None, two_runs, results_path="data/evaluation/none.jsonl")
    assert "### Per question" not in text
    assert "no per-question comparison: data/evaluation/none.jsonl at HEAD: cannot be read" in text


def test_results_file_errors_name_the_line(tmp_path):
    with pytest.raises(Exception, match=r"r.jsonl:2: needs \"id\" and \"outcome\""):
        read_results('{"id": "a", "outcome": "correct"}\n{"id": "b"}\n', "r.jsonl")
