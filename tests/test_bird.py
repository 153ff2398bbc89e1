"""BIRD's EX, Soft-F1, R-VES, difficulty table, gold timeout and dev version
(text2sql.evaluation.bird): by hand on small databases the tests write, against the official
verdicts recorded on Spider's training split in BIRD's layout (tests/fixtures/README.md says
how), and against bird-bench/mini_dev itself when BIRD_MINI_DEV names a checkout of it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import REPO, SPIDER_TRAIN
from text2sql.data.sources import load_bird_split
from text2sql.evaluation import bird
from text2sql.evaluation.bird import (
    BirdConfig,
    bird_match,
    resolve_semantics,
    reward_of_ratio,
    soft_f1,
    ves_reward,
)
from text2sql.evaluation.scoring import (
    CORRECT,
    GOLD_ERROR,
    EvalConfig,
    EvalItem,
    render_report,
    score_items,
    summarize,
)
from text2sql.io import DataError
from text2sql.params import EvaluateParams, parse_section

FIXTURE = REPO / "tests" / "fixtures" / "bird_spider_train.jsonl"
needs_spider = pytest.mark.skipif(not (SPIDER_TRAIN / "database").is_dir(),
                                  reason=f"{SPIDER_TRAIN}: Spider's training split not here")
needs_mini_dev = pytest.mark.skipif(
    not os.environ.get("BIRD_MINI_DEV"),
    reason="set BIRD_MINI_DEV to a checkout of bird-bench/mini_dev (and BIRD_MINI_DEV_PYTHON "
           "to a Python with numpy)")


# --- EX: set equality --------------------------------------------------------------------

@pytest.mark.parametrize("gold, pred, same", [
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True),  # row order does not count
    ([(1, "a")], [(1, "a"), (1, "a")], True),  # nor duplicate rows
    ([(1, "a"), (1, "a"), (2, "b")], [(1, "a"), (2, "b"), (2, "b")], True),
    ([(1, "a")], [("a", 1)], False),  # column order does
    ([(1,)], [(1.0,)], True),  # Python's equality: 1 == 1.0
    ([(None,)], [(None,)], True),
    ([("1",)], [(1,)], False),
    ([], [], True),
    ([(1,)], [], False),
    ([(1,)], [(1,), (2,)], False),
    ([(1, 2)], [(1, 2, 2)], False),
])
def test_ex_is_set_equality(gold, pred, same):
    assert bird_match(gold, pred) is same


# --- Soft-F1, by hand ------------------------------------------------------------------

@pytest.mark.parametrize("gold, pred, f1", [
    ([], [], 1.0),
    ([(1,)], [], 0.0),
    ([], [(1,)], 0.0),
    ([(1, 2), (3, 4)], [(1, 2), (3, 4)], 1.0),
    ([(1, 2), (3, 4)], [(1, 2), (1, 2), (3, 4)], 1.0),  # duplicates dropped first
    # row 1 matches wholly, row 2 half: tp = 1.5, fp = 0.5, fn = 0.5 -> P = R = 0.75
    ([(1, 2), (3, 4)], [(1, 2), (3, 9)], 0.75),
    # cells match within a row in any order: (2, 1) against (1, 2) is a full match
    ([(1, 2)], [(2, 1)], 1.0),
    # rows pair by position: swapped rows match nothing; tp = 0 -> 0
    ([(1, 2), (3, 4)], [(3, 4), (1, 2)], 0.0),
    # a missing row: tp = 1, fp = 0, fn = 1 -> P = 1, R = 0.5, F1 = 2/3
    ([(1, 2), (3, 4)], [(1, 2)], 2 / 3),
    # an extra row: tp = 1, fp = 1, fn = 0 -> F1 = 2/3
    ([(1, 2)], [(1, 2), (5, 6)], 2 / 3),
    # a wider prediction: 3 cells against a 2-wide gold row, 2 matched:
    # tp = 1, fp = 0.5, fn = 0 -> P = 2/3, R = 1, F1 = 0.8
    ([(1, 2)], [(1, 2, 7)], 0.8),
    # BIRD's README example: gold (Apple, 325), (Orange, NULL), (Banana, 119) against
    # (Apple, 325), (Orange, NULL), (Banana, 120): tp = 2.5, fp = fn = 0.5 -> 5/6
    ([("Apple", 325), ("Orange", None), ("Banana", 119)],
     [("Apple", 325), ("Orange", None), ("Banana", 120)], 5 / 6),
])
def test_soft_f1_by_hand(gold, pred, f1):
    assert math.isclose(soft_f1(gold, pred), f1, abs_tol=1e-12)


# --- R-VES -------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio, reward", [(0, 0), (0.1, 0.25), (0.25, 0.5), (0.49, 0.5),
                                           (0.5, 0.75), (0.99, 0.75), (1, 1), (1.99, 1),
                                           (2, 1.25), (10, 1.25)])
def test_reward_buckets(ratio, reward):
    assert reward_of_ratio(ratio) == reward


def test_ves_reward_from_timings():
    # gold twice as slow, with a little noise: ratio ~2.0x -> 1.25
    assert ves_reward([0.2, 0.21, 0.19, 0.2], [0.1, 0.1, 0.1, 0.1]) == 1.25
    assert ves_reward([0.1, 0.11, 0.1], [0.1, 0.1, 0.1]) == 1.0
    # an outlier past 3 standard deviations is dropped before the mean
    ratios = [1.0 + 0.01 * (k % 3) for k in range(20)] + [100.0]
    assert ves_reward(ratios, [1.0] * 21) == 1.0
    assert ves_reward([1.0] * 21, [1.0 / r for r in ratios]) == 1.0  # the same ratios
    # as in the official code: equal ratios leave nothing after the filter, a zero
    # predicted time divides by zero; both score 0
    assert ves_reward([0.2, 0.2], [0.1, 0.1]) == 0.0
    assert ves_reward([0.2, 0.3], [0.0, 0.1]) == 0.0
    assert ves_reward([], []) == 0.0


def test_r_ves_is_the_mean_square_root():
    assert math.isclose(bird.r_ves([1.25, 1.0, 0.25, 0.0]),
                        (math.sqrt(1.25) + 1 + 0.5 + 0) / 4)
    assert bird.r_ves([]) == 0.0


# --- scoring with BIRD's semantics on a real database ---------------------------------------

STORE = """
    CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL, kind TEXT);
    INSERT INTO item VALUES (1, 'pen', 3.0, 'office'), (2, 'ink', 1.5, 'office'),
                            (3, 'mug', 4.0, 'kitchen'), (4, 'pan', 9.0, 'kitchen');
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("bird") / "store.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(STORE)
    return str(path)


GOLD = "SELECT name, price FROM item WHERE kind = 'office' ORDER BY price"
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000000) "
        "SELECT count(*) FROM c")
CASES = [  # (pred, difficulty, Spider's verdict, BIRD's verdict)
    (GOLD, "simple", True, True),
    ("SELECT name, price FROM item WHERE kind = 'office'", "simple", False, True),  # no ORDER BY
    ("SELECT price, name FROM item WHERE kind = 'office' ORDER BY price", "moderate", True,
     False),  # columns swapped
    (f"SELECT * FROM ({GOLD}) UNION ALL SELECT * FROM ({GOLD})", "moderate", False,
     True),  # rows doubled
    ("SELECT name, price FROM item ORDER BY price LIMIT 2", "challenging", True, True),
    ("SELECT name FROM item WHERE kind = 'office' ORDER BY price", "challenging", False, False),
    ("SELECT nme FROM item", "challenging", False, False),
]


def _items(store: str, gold: str = GOLD) -> list[EvalItem]:
    return [EvalItem(f"q{k}", "store", store, "?", gold, pred, level)
            for k, (pred, level, _, _) in enumerate(CASES)]


def test_verdicts_follow_the_semantics(store):
    spider = score_items(_items(store), EvalConfig(workers=1, progress=False))
    birds = score_items(_items(store), EvalConfig(workers=1, progress=False, bird=BirdConfig()))
    assert [r.outcome == CORRECT for r in spider] == [c[2] for c in CASES]
    assert [r.outcome == CORRECT for r in birds] == [c[3] for c in CASES]
    assert all(r.soft_f1 is None and r.ves_reward is None for r in spider)
    # Soft-F1 pairs rows by position: the right rows in another order score 0 (EX forgives
    # it); swapped columns leave each row's cells the same, which it forgives
    assert [r.soft_f1 for r in birds][:5] == [1.0, 0.0, 1.0, 1.0, 1.0]
    assert birds[5].soft_f1 == pytest.approx(2 / 3)  # half of each row: P = 1, R = 0.5
    assert birds[6].soft_f1 == 0.0 and birds[6].outcome == "unknown_column"


def test_bird_metrics_and_difficulty_table(store):
    results = score_items(_items(store), EvalConfig(workers=1, progress=False, bird=BirdConfig()))
    m = summarize(results)
    assert m["execution_accuracy"] == round(4 / 7, 4)
    assert m["n_simple"] == 2 and m["execution_accuracy_simple"] == 1.0
    assert m["soft_f1_simple"] == 0.5
    assert m["n_moderate"] == 2 and m["execution_accuracy_moderate"] == 0.5
    assert m["n_challenging"] == 3 and m["execution_accuracy_challenging"] == round(1 / 3, 4)
    assert m["soft_f1_challenging"] == round((1 + 2 / 3) / 3, 4)
    assert m["soft_f1"] == round((4 + 2 / 3) / 7, 4)
    assert "r_ves" not in m  # not timed by default
    report = render_report(results, m)
    assert "| BIRD difficulty | n | EX | Soft-F1 |" in report
    assert "| moderate | 2 | 50.00 | 100.00 |" in report
    assert "| Soft-F1 (BIRD's) |" in report
    # Spider's semantics: none of it
    spider = summarize(score_items(_items(store), EvalConfig(workers=1, progress=False)))
    assert "soft_f1" not in spider and "n_simple" not in spider


def test_r_ves_times_the_correct_predictions(store):
    config = EvalConfig(workers=1, progress=False, bird=BirdConfig(ves_repeats=5))
    results = score_items(_items(store), config)
    for r, (_, _, _, correct) in zip(results, CASES):
        assert (r.ves_reward in (0.25, 0.5, 0.75, 1.0, 1.25)) if correct else r.ves_reward == 0
    m = summarize(results)
    assert 0 < m["r_ves"] <= math.sqrt(1.25)
    assert "r_ves_simple" in m and "| R-VES (BIRD's, machine-dependent) |" in render_report(
        results, m)


def test_r_ves_over_its_budget_scores_zero(store):
    medium = SLOW.replace("50000000", "300000")  # a few tenths of a second
    config = EvalConfig(workers=1, progress=False, bird=BirdConfig(2, 0.01))
    (r,) = score_items([EvalItem("q", "store", store, "?", medium, medium)], config)
    assert r.outcome == CORRECT and r.ves_reward == 0.0 and "timing budget" in r.message


def test_gold_timeout_is_its_own_param_and_counted(store):
    items = [EvalItem("slow", "store", store, "?", SLOW, "SELECT 1"),
             EvalItem("fast", "store", store, "?", GOLD, GOLD)]
    config = EvalConfig(workers=1, progress=False, timeout_s=5, gold_timeout_s=0.05)
    results = score_items(items, config)
    assert [r.outcome for r in results] == [GOLD_ERROR, CORRECT]
    m = summarize(results)
    assert m["gold_timeouts"] == 1 and m["gold_errors"] == 1 and m["n"] == 1
    assert "| gold queries over the gold timeout | 1 |" in render_report(results, m)
    # a gold query that fails for another reason is a gold error, not a timeout
    broken = score_items([EvalItem("b", "store", store, "?", "SELECT nope FROM item", "SELECT 1")],
                         config)
    assert summarize(broken)["gold_timeouts"] == 0


def test_queries_run_as_written_under_bird(store):
    # Spider's evaluator drops DISTINCT, BIRD's does not: COUNT(DISTINCT kind) is 2, not 4
    items = [EvalItem("d", "store", store, "?", "SELECT count(DISTINCT kind) FROM item",
                      "SELECT count(kind) FROM item")]
    spider, = score_items(items, EvalConfig(workers=1, progress=False))
    birds, = score_items(items, EvalConfig(workers=1, progress=False, bird=BirdConfig()))
    assert spider.outcome == CORRECT and birds.outcome == "wrong_result"


# --- layout, semantics, version, params ----------------------------------------------------

def _bird_dev(root: Path, store: str, rows: list[dict]) -> Path:
    folder = root / "dev_databases" / "store"
    folder.mkdir(parents=True)
    (folder / "store.sqlite").symlink_to(store)
    (root / "dev.json").write_text(json.dumps(rows))
    return root / "dev.json"


def test_loader_keeps_bird_difficulty_and_the_file_hash(tmp_path, store):
    rows = [{"question": "q", "SQL": GOLD, "db_id": "store", "evidence": "", "difficulty": d}
            for d in ("simple", "challenging", "odd")] + [
        {"question": "q", "SQL": GOLD, "db_id": "store"}]
    path = _bird_dev(tmp_path, store, rows)
    data = load_bird_split(tmp_path, "dev")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [e.bird_difficulty for e in data.examples] == ["simple", "challenging", None, None]
    assert {e.bird_sha256 for e in data.examples} == {digest}
    assert bird.dev_version(digest) == "unknown"
    assert f"sha256 {digest}: version unknown" in bird.version_note([digest, digest])


def test_dev_version_is_read_from_the_hash(monkeypatch):
    monkeypatch.setitem(bird.KNOWN_DEV_FILES, "ab" * 32, "dev_20240627")
    assert bird.dev_version("ab" * 32) == "dev_20240627"
    assert bird.dev_version("cd" * 32) == bird.dev_version(None) == "unknown"


def test_semantics_follow_the_layout_unless_set():
    assert resolve_semantics("auto", True) == "bird"
    assert resolve_semantics("auto", False) == "spider"
    assert resolve_semantics("spider", True) == "spider"
    assert resolve_semantics("bird", False) == "bird"
    with pytest.raises(ValueError, match="not one of auto, spider, bird"):
        resolve_semantics("sql", True)


@pytest.mark.parametrize("values, message", [
    ({"semantics": "birds"}, "evaluate.semantics"),
    ({"ves_repeats": 1}, "evaluate.ves_repeats=1"),
    ({"ves_repeats": -2}, "evaluate.ves_repeats"),
    ({"gold_timeout_s": 0}, "evaluate.gold_timeout_s"),
    ({"ves_timeout_s": -1.0}, "evaluate.ves_timeout_s"),
])
def test_bad_params_are_named(values, message):
    with pytest.raises(DataError, match=message.replace(".", r"\.")):
        parse_section(EvaluateParams, values, "evaluate")


def test_bird_config_refuses_a_single_timing():
    with pytest.raises(ValueError, match="at least 2"):
        BirdConfig(ves_repeats=1)
    assert BirdConfig(ves_repeats=0).ves_repeats == 0


def test_cli_scores_a_bird_split_with_birds_rules(tmp_path, store):
    from text2sql.cli import main as cli

    rows = [{"question": "q", "SQL": GOLD, "db_id": "store", "evidence": "", "difficulty": d}
            for d in ("simple", "moderate")]
    _bird_dev(tmp_path / "bird", store, rows)
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT name, price FROM item WHERE kind = 'office'\n"
                     "SELECT price, name FROM item WHERE kind = 'office' ORDER BY price\n")
    for semantics, correct in (("auto", 1), ("spider", 1), ("bird", 1)):
        out = tmp_path / semantics
        assert cli(["evaluate", str(preds), "--dataset", str(tmp_path / "bird"), "--layout",
                    "bird", "--out", str(out), "--semantics", semantics, "--no-progress",
                    "--workers", "1"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["execution_accuracy"] == correct / 2
        assert ("soft_f1" in m) is (semantics != "spider")
    assert "version unknown" in (tmp_path / "auto" / "report.md").read_text()
    assert cli(["evaluate", str(preds), "--dataset", str(tmp_path / "bird"), "--layout", "bird",
                "--out", str(tmp_path / "x"), "--ves-repeats", "1"]) == 2


def test_stage_scores_prepared_bird_rows_with_birds_rules(tmp_path, store):
    """stages/evaluate.py on rows ``prepare`` wrote from a BIRD split (``bird_sha256``)."""
    for name in ("prepared", "predictions"):
        (tmp_path / "data" / name).mkdir(parents=True)
    cases = CASES[:4]
    prepared = [{"id": f"e{k}", "db_id": "store", "db_path": store, "question": "?", "query": GOLD,
                 "bird_sha256": "ab" * 32, "bird_difficulty": level}
                for k, (_, level, _, _) in enumerate(cases)]
    predictions = [{"id": f"e{k}", "sql": pred} for k, (pred, _, _, _) in enumerate(cases)]
    for name, rows in (("prepared", prepared), ("predictions", predictions)):
        (tmp_path / "data" / name / "eval.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    stage = [sys.executable, str(REPO / "stages" / "evaluate.py")]
    for semantics, ex in (("auto", 0.75), ("spider", 0.5)):
        (tmp_path / "params.yaml").write_text(
            f"evaluate:\n  workers: 1\n  semantics: {semantics}\n  ves_repeats: 3\n")
        proc = subprocess.run(stage, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        m = json.loads((tmp_path / "metrics" / "eval.json").read_text())
        assert m["execution_accuracy"] == ex
        assert ("soft_f1" in m and "r_ves" in m) is (semantics == "auto")
    assert "a BIRD split, scored with Spider's semantics" in proc.stdout
    (tmp_path / "params.yaml").write_text("evaluate:\n  ves_repeats: 1\n")
    proc = subprocess.run(stage, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "evaluate.ves_repeats=1" in proc.stderr


# --- against BIRD's own evaluator ------------------------------------------------------------

def recorded() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


@pytest.fixture(scope="module")
def bird_spider(tmp_path_factory) -> Path:
    from tests.bird_pairs import convert

    root = tmp_path_factory.mktemp("bird-spider")
    convert(SPIDER_TRAIN, root)
    return root


@needs_spider
def test_agrees_with_the_official_verdicts_on_spider_train(bird_spider):
    rows = recorded()
    assert len(rows) == 272 and {r["ex"] for r in rows} == {0, 1}
    examples = list(load_bird_split(bird_spider, "dev").examples)
    items = [EvalItem(str(k), r["db_id"], examples[r["index"]].db_path, "", r["gold"], r["pred"],
                      examples[r["index"]].bird_difficulty) for k, r in enumerate(rows)]
    assert all(examples[r["index"]].bird_difficulty == r["difficulty"] for r in rows)
    results = score_items(items, EvalConfig(workers=2, progress=False, bird=BirdConfig()))
    wrong = [(r["kind"], r["ex"], s.outcome, r["f1"], s.soft_f1, r["pred"])
             for r, s in zip(rows, results)
             if (s.outcome == CORRECT) != bool(r["ex"]) or s.soft_f1 != r["f1"]]
    assert not wrong, wrong[:5]


@needs_spider
@needs_mini_dev
def test_the_official_evaluator_still_gives_the_recorded_verdicts(tmp_path, bird_spider):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("ex", "f1")})
                             + "\n" for r in recorded()))
    python = os.environ.get("BIRD_MINI_DEV_PYTHON", sys.executable)
    subprocess.run([python, str(REPO / "tests" / "official_bird.py"), os.environ["BIRD_MINI_DEV"],
                    "pairs", str(bird_spider / "dev_databases"), str(pairs),
                    str(tmp_path / "out.jsonl")], check=True, timeout=300)
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    tables = got.pop()
    assert [(g["ex"], g["f1"]) for g in got] == [(r["ex"], r["f1"]) for r in recorded()]
    # the difficulty table: BIRD prints percentages of the same counts
    m = summarize(score_items(
        [EvalItem(str(k), r["db_id"], str(bird_spider / "dev_databases" / r["db_id"] /
                                          f"{r['db_id']}.sqlite"), "", r["gold"], r["pred"],
                  r["difficulty"]) for k, r in enumerate(recorded())],
        EvalConfig(workers=2, progress=False, bird=BirdConfig())))
    simple, moderate, challenging, total, counts = tables["ex_table"]
    assert counts == [m["n_simple"], m["n_moderate"], m["n_challenging"], m["n"]]
    for official, key in zip((simple, moderate, challenging, total),
                             ("_simple", "_moderate", "_challenging", "")):
        assert round(official / 100, 4) == m[f"execution_accuracy{key}"]
    for official, key in zip(tables["f1_table"][:4], ("_simple", "_moderate", "_challenging", "")):
        assert round(official / 100, 4) == m[f"soft_f1{key}"]


def timing_cases(seed: int = 0) -> list[dict]:
    """Paired (gold, pred) timings: noisy, with outliers, equal ratios, a zero, near edges."""
    rng = random.Random(seed)
    cases = []
    for n in (2, 3, 5, 10, 20, 100):
        for _ in range(40):
            g0, p0 = rng.uniform(0.001, 0.2), rng.uniform(0.001, 0.2)
            gold = [max(1e-6, rng.gauss(g0, g0 * rng.choice((0.01, 0.1, 0.5)))) for _ in range(n)]
            pred = [max(1e-6, rng.gauss(p0, p0 * rng.choice((0.01, 0.1, 0.5)))) for _ in range(n)]
            if rng.random() < 0.2:
                gold[rng.randrange(n)] *= 50
            cases.append({"gold": gold, "pred": pred})
    for r in (3.0, 2.0, 1.0, 0.5, 0.25, 0.1):
        cases += [{"gold": [r] * 3, "pred": [1.0] * 3},
                  {"gold": [r * 1.001, r * 0.999, r * 1.0005, r * 0.9995], "pred": [1.0] * 4}]
    return cases + [{"gold": [0.1, 0.2], "pred": [0.0, 0.1]}]


@needs_mini_dev
def test_r_ves_formula_agrees_with_the_official_one(tmp_path):
    timings = tmp_path / "timings.jsonl"
    cases = timing_cases()
    timings.write_text("".join(json.dumps(c) + "\n" for c in cases))
    python = os.environ.get("BIRD_MINI_DEV_PYTHON", sys.executable)
    subprocess.run([python, str(REPO / "tests" / "official_bird.py"), os.environ["BIRD_MINI_DEV"],
                    "ves", str(timings), str(tmp_path / "out.jsonl")], check=True, timeout=300)
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    total = got.pop()["r_ves"]
    ours = [ves_reward(c["gold"], c["pred"]) for c in cases]
    assert ours == [g["reward"] for g in got]
    assert math.isclose(100 * bird.r_ves(ours), total, rel_tol=1e-12)
