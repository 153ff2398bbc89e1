"""The prepare core and stage: rows, prompts without gold leakage, drops, metrics, atomic outputs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from text2sql.data.prepare import PrepareStats, prepare_examples
from text2sql.data.prompts import PromptOptions, make_prompt
from text2sql.data.sources import Example, load_spider_split
from text2sql.io import DataError
from text2sql.params import PrepareParams, parse_section

REPO = Path(__file__).resolve().parents[1]
SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"
FIELDS = {"id", "db_id", "db_path", "question", "query", "tables", "prompt", "completion"}


@pytest.fixture(scope="module")
def sample(sample_dir):
    return load_spider_split(sample_dir, "dev")


def test_rows_have_the_shared_fields(sample):
    stats = PrepareStats()
    rows = list(prepare_examples(sample.examples[:20], sample.schemas, stats=stats))
    assert len(rows) == 20 and stats.n == 20
    for row, ex in zip(rows, sample.examples, strict=False):
        assert FIELDS <= set(row) and row["query"] == ex.query
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["completion"] == [{"role": "assistant", "content": ex.query}]
        assert row["prompt"][1]["content"].endswith(f"Question: {ex.question}")
        for table in row["tables"]:
            assert f"CREATE TABLE {table} (" in row["prompt"][1]["content"]


def test_prompt_does_not_depend_on_the_gold_sql(sample):
    ex = next(e for e in sample.examples if "JOIN" in e.query)
    other = Example(ex.id, ex.db_id, ex.question, "SELECT 1", ex.db_path)
    a, b = (next(prepare_examples([e], sample.schemas, check_gold=False)) for e in (ex, other))
    assert a["prompt"] == b["prompt"] and a["tables"] == b["tables"]


def test_values_sample_rows_and_compact_format(sample):
    ex = next(e for e in sample.examples if "'" in e.query and "name =" in e.query)
    value = ex.query.split("name = '")[1].split("'")[0]
    linked = make_prompt(ex.question, sample.schemas[ex.db_id], ex.db_path,
                         options=PromptOptions(schema_format="compact", sample_rows=2))
    user = linked.messages[1]["content"]
    assert "Values: " in user and f"= '{value}'" in user
    assert "  rows: (" in user and "CREATE TABLE" not in user
    bare = make_prompt(ex.question, sample.schemas[ex.db_id], ex.db_path,
                       options=PromptOptions(value_hints=0, link_schema=False))
    assert "Values:" not in bare.messages[1]["content"] and bare.full_schema
    assert bare.tables == sample.schemas[ex.db_id].table_names


def test_evidence_goes_into_the_prompt(sample):
    ex = sample.examples[0]
    ex = Example(ex.id, ex.db_id, ex.question, ex.query, ex.db_path, evidence="doctors are staff")
    row = next(prepare_examples([ex], sample.schemas))
    assert "Evidence: doctors are staff" in row["prompt"][1]["content"]
    assert row["evidence"] == "doctors are staff"


def test_gold_sql_that_does_not_run_is_dropped_and_counted(sample):
    good = sample.examples[0]
    bad = [Example("b1", good.db_id, "q?", "SELECT nope FROM nowhere", good.db_path),
           Example("b2", good.db_id, "q?", "SELECT 1 ORDER BY 1 INTERSECT SELECT 1", good.db_path),
           Example("b3", good.db_id, "  ", good.query, good.db_path)]
    stats = PrepareStats()
    rows = list(prepare_examples([good, *bad], sample.schemas, stats=stats))
    assert [r["id"] for r in rows] == [good.id]
    m = stats.as_metrics("train")
    assert m["train_read"] == 4 and m["train_n"] == 1 and m["train_dropped"] == 3
    assert m["train_dropped_gold_sql_error"] == 2 and m["train_dropped_empty_question"] == 1
    assert "no such table: nowhere" in stats.dropped_examples[0].detail


def test_text_that_is_not_utf8_in_a_database(tmp_path):
    db = tmp_path / "bad.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, town TEXT)")
    conn.execute("INSERT INTO people VALUES (1, CAST(X'4A6F73E9' AS TEXT), 'Oslo')")
    conn.commit()
    conn.close()
    from text2sql.sql.schema import schema_from_sqlite

    ex = Example("x", "bad", "Who lives in Oslo?", "SELECT name FROM people WHERE town = 'Oslo'",
                 str(db))
    row = next(prepare_examples([ex], {"bad": schema_from_sqlite(db, "bad")}, sample_rows=1))
    assert "'Jos\ufffd'" in row["prompt"][1]["content"]
    assert "people.town = 'Oslo'" in row["prompt"][1]["content"]


@pytest.mark.skipif(not SPIDER_TRAIN.is_dir(), reason=f"{SPIDER_TRAIN} (real Spider data) is absent")
def test_spider_train_broken_gold_queries_are_counted():
    ds = load_spider_split(SPIDER_TRAIN, "train")
    some = [e for e in ds.examples if e.db_id in ("assets_maintenance", "document_management")]
    stats = PrepareStats()
    rows = list(prepare_examples(some, ds.schemas, stats=stats))
    assert stats.dropped["gold_sql_error"] == 3 and len(rows) == len(some) - 3
    assert {d.db_id for d in stats.dropped_examples} == {"assets_maintenance", "document_management"}


# ---------------------------------------------------------------------- stage


def load_stage():
    spec = importlib.util.spec_from_file_location("prepare_stage", REPO / "stages" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def params(**kw) -> PrepareParams:
    return parse_section(PrepareParams, kw, "prepare")


def test_stage_writes_splits_and_metrics(tmp_path, monkeypatch, sample_dir):
    monkeypatch.chdir(tmp_path)
    load_stage().main(params(path=str(sample_dir), max_train_examples=300))
    train = [json.loads(x) for x in Path("data/prepared/train.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in Path("data/prepared/eval.jsonl").read_text().splitlines()]
    assert len(train) == 300 and len(evals) == 192
    assert FIELDS <= set(train[0])
    m = json.loads(Path("metrics/prepare.json").read_text())
    assert m["train_n"] == 300 and m["eval_n"] == 192 and m["eval_dropped"] == 0
    assert all(isinstance(v, (int, float)) for v in m.values())
    assert m["eval_table_recall"] >= 0.98
    assert m["eval_schema_tokens_mean"] < m["eval_full_schema_tokens_mean"]
    assert m["eval_prompt_tokens_mean"] < m["eval_full_prompt_tokens_mean"]
    assert Path("data/prepared/dropped.jsonl").read_text() == ""


def test_failed_run_leaves_previous_outputs_intact(tmp_path, monkeypatch, sample_dir):
    monkeypatch.chdir(tmp_path)
    stage = load_stage()
    stage.main(params(path=str(sample_dir), max_train_examples=50, max_eval_examples=50))
    before = {p: p.read_bytes() for p in [*Path("data/prepared").iterdir(), Path("metrics/prepare.json")]}
    # A JSONL source whose evaluation file ends in a broken line: the run fails after
    # writing the whole training split and most of the evaluation split.
    shutil.copytree(sample_dir / "database", tmp_path / "dbs")
    lines = [json.dumps({"question": f"How many doctors? {i}", "query": "SELECT count(*) FROM doctors",
                         "db_id": "clinic"}) for i in range(20)]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "src" / "dev.jsonl").write_text("\n".join(lines) + "\n{not json\n")
    with pytest.raises(DataError, match=r"dev.jsonl:21: invalid JSON"):
        stage.main(params(source="jsonl", path="src", db_dir="dbs"))
    after = {p: p.read_bytes() for p in [*Path("data/prepared").iterdir(), Path("metrics/prepare.json")]}
    assert after == before
    assert sorted(p.name for p in Path("data").iterdir()) == ["prepared"]  # no temporary left


def test_stage_on_jsonl_with_seed_format(tmp_path, monkeypatch, sample_dir):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(sample_dir / "database", tmp_path / "dbs")
    rows = [{"instruction": f"How many {t}?", "output": f"SELECT count(*) FROM {t}", "db_id": db}
            for db, t in [("clinic", "doctors"), ("shop", "products"), ("school", "students"),
                          ("library", "books")] * 3]
    Path("seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    load_stage().main(params(source="jsonl", path="seed.jsonl", db_dir="dbs", eval_fraction=0.25))
    m = json.loads(Path("metrics/prepare.json").read_text())
    assert m["train_n"] == 9 and m["eval_n"] == 3 and m["train_table_recall"] == 1.0


def test_unknown_or_mistyped_params_are_errors():
    with pytest.raises(DataError, match=r"unknown key 'prepare.columns.quesiton'"):
        params(columns={"quesiton": "text"})
    with pytest.raises(DataError, match=r"prepare.fk_parents"):
        params(fk_parents="sometimes")
    assert params(columns={"question": "text"}).columns.query == "query"


def hub_cache_with(cache: Path, hub_id: str, ref: str, dataset_dict) -> None:
    """A Hugging Face hub cache (``HF_HUB_CACHE`` layout) holding ``hub_id`` at tag ``ref``:
    a dataset saved to disk, as ``snapshot_download`` would have left it."""
    repo = cache / f"datasets--{hub_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    dataset_dict.save_to_disk(str(repo / "snapshots" / commit))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / ref).write_text(commit)


@pytest.mark.dvc
def test_hub_dataset_under_dvc_repro(tmp_path, sample_dir):
    """docs/stages.md's hub command runs under DVC: the hub id is a param, not a path dependency;
    the revision pins it; the local databases folder is the dependency."""
    datasets = pytest.importorskip("datasets")
    import yaml

    from tests.pipeline_run import copy_source, dvc

    examples = json.loads((sample_dir / "train_spider.json").read_text())
    rows = lambda part: {"text": [e["question"] for e in part], "sql": [e["query"] for e in part],  # noqa: E731
                         "db_id": [e["db_id"] for e in part]}
    hub_cache_with(tmp_path / "hub", "org/dataset", "v1", datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows(examples[:12])),
         "validation": datasets.Dataset.from_dict(rows(examples[12:16]))}))
    repo = copy_source(tmp_path / "repo", {"prepare": {
        "source": "hf", "hub": "org/dataset", "revision": "v1", "path": "data/dbs",
        "eval_split": "validation", "columns": {"question": "text", "query": "sql",
                                                "db_id": "db_id", "evidence": None}}})
    shutil.copytree(sample_dir / "database", repo / "data" / "dbs")
    offline = dict(HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1",
                   HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "datasets-cache"))
    dvc("repro", "prepare", cwd=repo, timeout=300, **offline)
    evals = (repo / "data" / "prepared" / "eval.jsonl").read_text().splitlines()
    assert len(evals) == 4 and json.loads(evals[0])["db_path"].startswith("data/dbs/")
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]
    deps = {d["path"] for d in lock["deps"]}
    assert "data/dbs" in deps and not any("org/dataset" in d for d in deps)
    assert lock["params"]["params.yaml"]["prepare"]["revision"] == "v1"
    # Another revision is another dataset: DVC sees the stage changed.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["revision"] = "v2"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "prepare" in dvc("status", "prepare", cwd=repo, **offline).stdout
    failed = dvc("repro", "prepare", cwd=repo, check=False, timeout=300, **offline)
    assert failed.returncode != 0 and "revision 'v2': cannot get it" in failed.stderr


def test_hub_dataset_needs_a_revision():
    from text2sql.data.sources import load_dataset_splits

    with pytest.raises(DataError, match=r"prepare.hub 'org/dataset': give prepare.revision"):
        load_dataset_splits("hf", "data/dbs", "train", "dev", 0.1, 0, hub="org/dataset")
    with pytest.raises(DataError, match=r"needs prepare.source: hf"):
        load_dataset_splits("spider", "data/dbs", "train", "dev", 0.1, 0, hub="org/dataset",
                            revision="v1")
