"""Loaders: Spider, BIRD, JSONL (streamed) and Hugging Face layouts, splits, and bad input."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from text2sql.data.sources import (
    Dataset,
    Example,
    ExampleStream,
    load_bird_split,
    load_dataset_splits,
    load_jsonl_split,
    load_spider_split,
    open_databases,
    split_off,
)
from text2sql.io import DataError
from text2sql.params import ColumnParams


def make_db(path: Path, rows: int = 3) -> Path:
    """A two-table SQLite database: singers and the concerts they play."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT);
        CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER, year INTEGER,
                              FOREIGN KEY (singer_id) REFERENCES singer(singer_id));
    """)
    for i in range(rows):
        conn.execute("INSERT INTO singer VALUES (?, ?, ?)", (i, f"Singer {i}", "France"))
        conn.execute("INSERT INTO concert VALUES (?, ?, ?)", (i, i, 2000 + i))
    conn.commit()
    conn.close()
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
                    encoding="utf-8")
    return path


Q = "SELECT count(*) FROM singer"


# --------------------------------------------------------------------- Spider


def test_spider_sample_splits(sample_dir):
    train, evals = load_dataset_splits("spider", str(sample_dir), "train", "dev", 0.1, 0)
    assert len(train.examples) == 1728 and len(evals.examples) == 192
    ex = train.examples[0]
    assert ex.id == "train-00000" and Path(ex.db_path).is_file()
    assert set(train.schemas) == {"school", "library", "shop", "clinic"}


def test_spider_without_tables_json_reads_sqlite(tmp_path):
    make_db(tmp_path / "database" / "music" / "music.sqlite")
    write_json(tmp_path / "train_spider.json", [{"question": "How many singers?", "query": Q,
                                                 "db_id": "music"}])
    ds = load_spider_split(tmp_path, "train")
    assert ds.schemas["music"].table_names == ["singer", "concert"]
    assert ds.schemas["music"].foreign_keys[0].ref_table == "singer"


def test_spider_missing_field_names_it(tmp_path, sample_dir):
    shutil.copy(sample_dir / "tables.json", tmp_path / "tables.json")
    write_json(tmp_path / "train_spider.json", [{"question": "q", "db_id": "shop"}])
    with pytest.raises(DataError, match=r"train_spider.json: example 0: missing field 'query'"):
        load_spider_split(tmp_path, "train")


def test_spider_unknown_db_id_names_it_and_tables_file(tmp_path, sample_dir):
    shutil.copy(sample_dir / "tables.json", tmp_path / "tables.json")
    write_json(tmp_path / "train_spider.json", [{"question": "q", "query": Q, "db_id": "nope"}])
    with pytest.raises(DataError, match=r"example 0: unknown db_id 'nope'.*tables.json"):
        load_spider_split(tmp_path, "train")


def test_spider_missing_sqlite_names_db_and_file(tmp_path, sample_dir):
    shutil.copy(sample_dir / "tables.json", tmp_path / "tables.json")
    write_json(tmp_path / "train_spider.json", [{"question": "q", "query": Q, "db_id": "shop"}])
    with pytest.raises(DataError, match=r"db_id 'shop': SQLite file .*shop/shop.sqlite not found"):
        load_spider_split(tmp_path, "train")


def test_spider_malformed_json_names_file_and_line(tmp_path, sample_dir):
    shutil.copy(sample_dir / "tables.json", tmp_path / "tables.json")
    (tmp_path / "train_spider.json").write_text('[\n{"question": "q",\n oops}\n]')
    with pytest.raises(DataError, match=r"train_spider.json:3:\d+: invalid JSON"):
        load_spider_split(tmp_path, "train")


def test_missing_folder_and_split(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset_splits("spider", str(tmp_path / "nothing"), "train", "dev", 0.1, 0)
    with pytest.raises(DataError, match="no data for split 'train'"):
        load_dataset_splits("spider", str(tmp_path), "train", "dev", 0.1, 0)


def test_single_split_source_needs_eval_fraction(tmp_path):
    make_db(tmp_path / "database" / "music" / "music.sqlite")
    write_json(tmp_path / "train_spider.json", [{"question": "q", "query": Q, "db_id": "music"}])
    with pytest.raises(DataError, match="eval_fraction"):
        load_dataset_splits("spider", str(tmp_path), "train", "dev", 0.0, 0)


# ----------------------------------------------------------------------- BIRD


def bird_folder(root: Path) -> Path:
    """BIRD's layout: train at the top, dev in its own folder (both occur in releases)."""
    make_db(root / "train_databases" / "music" / "music.sqlite")
    write_json(root / "train.json", [
        {"question": "Singers from France?", "SQL": "SELECT name FROM singer WHERE country = 'France'",
         "db_id": "music", "evidence": "France refers to country = 'France'"},
        {"question": "How many concerts?", "SQL": "SELECT count(*) FROM concert", "db_id": "music",
         "evidence": ""},
    ])
    make_db(root / "dev" / "dev_databases" / "gigs" / "gigs.sqlite")
    write_json(root / "dev" / "dev.json", [
        {"question": "Latest concert year?", "SQL": "SELECT max(year) FROM concert", "db_id": "gigs",
         "evidence": "latest refers to max(year)"}])
    return root


def test_bird_layout_with_evidence(tmp_path):
    root = bird_folder(tmp_path)
    train, evals = load_dataset_splits("bird", str(root), "train", "dev", 0.1, 0)
    assert [e.evidence for e in train.examples] == ["France refers to country = 'France'", None]
    assert train.examples[0].query.startswith("SELECT name")
    assert evals.examples[0].db_id == "gigs" and evals.examples[0].db_path.endswith("gigs.sqlite")
    assert set(evals.schemas) == {"gigs"}  # from dev_databases: there is no dev_tables.json


def test_bird_uses_its_tables_file(tmp_path, sample_dir):
    root = bird_folder(tmp_path)
    tables = json.loads((sample_dir / "tables.json").read_text())
    music = dict(tables[0], db_id="music", table_names_original=["singer", "concert"],
                 table_names=["singer", "concert"],
                 column_names_original=[[-1, "*"], [0, "singer_id"], [0, "name"], [1, "year"]],
                 column_names=[[-1, "*"], [0, "singer id"], [0, "name"], [1, "year"]],
                 column_types=["text", "number", "text", "number"], primary_keys=[1],
                 foreign_keys=[])
    write_json(root / "train_tables.json", [music])
    ds = load_bird_split(root, "train")
    assert [c.name for c in ds.schemas["music"].tables[1].columns] == ["year"]


def test_bird_missing_sql_field(tmp_path):
    root = bird_folder(tmp_path)
    write_json(root / "train.json", [{"question": "q", "db_id": "music"}])
    with pytest.raises(DataError, match=r"example 0: missing field 'SQL'"):
        load_bird_split(root, "train")


# ---------------------------------------------------------------------- JSONL


@pytest.fixture
def db_dir(tmp_path) -> Path:
    make_db(tmp_path / "dbs" / "music" / "music.sqlite")  # Spider-style nesting
    make_db(tmp_path / "dbs" / "gigs.sqlite")  # a flat file works too
    return tmp_path / "dbs"


def test_jsonl_both_line_formats(tmp_path, db_dir):
    f = write_lines(tmp_path / "data.jsonl", [
        {"question": "How many singers?", "query": Q, "db_id": "music"},
        "",
        {"instruction": "How many concerts?", "output": "SELECT count(*) FROM concert",
         "db_id": "gigs"},
    ])
    dbs = open_databases(None, db_dir)
    ds = load_jsonl_split(f, "train", dbs)
    assert isinstance(ds.examples, ExampleStream)
    got = list(ds.examples)
    assert [(e.id, e.question, e.db_id) for e in got] == [
        ("train-00001", "How many singers?", "music"), ("train-00003", "How many concerts?", "gigs")]
    assert got[1].db_path.endswith("gigs.sqlite") and got[1].query.endswith("concert")
    assert list(ds.examples) == got  # a stream can be read again


def test_jsonl_is_streamed_line_by_line(tmp_path, db_dir):
    """The first example comes out before a bad line further down is read."""
    f = write_lines(tmp_path / "data.jsonl",
                    [{"question": "How many singers?", "query": Q, "db_id": "music"}] * 3
                    + ["{broken"])
    stream = iter(load_jsonl_split(f, "train", open_databases(None, db_dir)).examples)
    assert next(stream).question == "How many singers?"
    with pytest.raises(DataError, match=r"data.jsonl:4: invalid JSON"):
        list(stream)


def test_jsonl_folder_of_splits_and_seeded_split(tmp_path, db_dir):
    folder = tmp_path / "jsonl"
    write_lines(folder / "train.jsonl", [{"question": "a", "query": Q, "db_id": "music"}])
    write_lines(folder / "dev.jsonl", [{"question": "b", "query": Q, "db_id": "gigs"}])
    train, evals = load_dataset_splits("jsonl", str(folder), "train", "dev", 0.5, 0,
                                       db_dir=str(db_dir))
    assert [e.question for e in train.examples] == ["a"]
    assert [e.question for e in evals.examples] == ["b"]
    # One file is one split: the evaluation split is held out by database, seeded.
    one = write_lines(tmp_path / "all.jsonl", [{"question": "a", "query": Q, "db_id": "music"},
                                               {"question": "b", "query": Q, "db_id": "gigs"}])
    train, evals = load_dataset_splits("jsonl", str(one), "train", "dev", 0.5, 0, db_dir=str(db_dir))
    assert {e.db_id for e in train.examples} | {e.db_id for e in evals.examples} == {"music", "gigs"}
    assert not {e.db_id for e in train.examples} & {e.db_id for e in evals.examples}


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "query": "SELECT 1", "db_id": "music"', r"data.jsonl:2: invalid JSON"),
    ('[1, 2]', r"data.jsonl:2: expected a JSON object"),
    ('{"query": "SELECT 1", "db_id": "music"}',
     r"data.jsonl:2: missing field 'question' \(or 'instruction'\)"),
    ('{"question": "q", "db_id": "music"}', r"data.jsonl:2: missing field 'query' \(or 'output'\)"),
    ('{"question": "q", "query": "SELECT 1"}', r"data.jsonl:2: missing field 'db_id'"),
    ('{"question": 3, "query": "SELECT 1", "db_id": "music"}', r"data.jsonl:2: field 'question'"),
    ('{"question": "q", "query": "SELECT 1", "db_id": "nowhere"}',
     r"data.jsonl:2: unknown db_id 'nowhere'"),
])
def test_jsonl_bad_lines_name_file_line_and_field(tmp_path, db_dir, line, message):
    f = write_lines(tmp_path / "data.jsonl", [{"question": "q", "query": Q, "db_id": "music"}, line])
    with pytest.raises(DataError, match=message):
        list(load_jsonl_split(f, "train", open_databases(None, db_dir)).examples)


def test_jsonl_missing_sqlite_names_db_and_file(tmp_path, sample_dir):
    """With a tables file the db_id is known, but its SQLite file is missing."""
    f = write_lines(tmp_path / "data.jsonl", [{"question": "q", "query": Q, "db_id": "shop"}])
    (tmp_path / "dbs").mkdir()
    with pytest.raises(DataError, match=r"data.jsonl:1: db_id 'shop': SQLite file .*shop.sqlite"):
        load_dataset_splits("jsonl", str(f), "train", "dev", 0.5, 0,
                            tables=str(sample_dir / "tables.json"), db_dir=str(tmp_path / "dbs"))


def test_jsonl_needs_schemas(tmp_path):
    f = write_lines(tmp_path / "data.jsonl", [{"question": "q", "query": Q, "db_id": "music"}])
    with pytest.raises(DataError, match="prepare.db_dir"):
        load_dataset_splits("jsonl", str(f), "train", "dev", 0.5, 0)


def test_jsonl_not_utf8_names_line(tmp_path, db_dir):
    f = tmp_path / "data.jsonl"
    f.write_bytes(b'{"question": "q", "query": "SELECT 1", "db_id": "music"}\n{"question": "\xff"}\n')
    with pytest.raises(DataError, match=r"data.jsonl:2: not valid UTF-8"):
        list(load_jsonl_split(f, "train", open_databases(None, db_dir)).examples)


# -------------------------------------------------------------- Hugging Face


def test_hf_saved_dataset_with_column_mapping(tmp_path, db_dir, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = {"text": ["How many singers?", "Years of concerts?"], "sql": [Q, "SELECT year FROM concert"],
            "database": ["music", "gigs"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict(rows)}
                         ).save_to_disk(str(tmp_path / "hf"))
    cols = ColumnParams(question="text", query="sql", db_id="database", evidence=None)
    train, evals = load_dataset_splits("hf", str(tmp_path / "hf"), "train", "validation", 0.1, 0,
                                       db_dir=str(db_dir), columns=cols)
    got = list(train.examples)
    assert [(e.question, e.db_id) for e in got] == [("How many singers?", "music"),
                                                   ("Years of concerts?", "gigs")]
    assert len(list(evals.examples)) == 2
    with pytest.raises(DataError, match=r"missing column\(s\) \['question'\].*prepare.columns"):
        load_dataset_splits("hf", str(tmp_path / "hf"), "train", "validation", 0.1, 0,
                            db_dir=str(db_dir), columns=ColumnParams(query="sql", db_id="database"))


def test_hf_load_dataset_on_local_files(tmp_path, db_dir, monkeypatch):
    """``datasets.load_dataset`` on a folder of data files, one split: seeded hold-out."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    write_lines(tmp_path / "hfjson" / "train.jsonl",
                [{"question": f"q{i}", "query": Q, "db_id": db} for i, db in
                 enumerate(["music", "gigs"] * 3)])
    train, evals = load_dataset_splits("hf", str(tmp_path / "hfjson"), "train", "dev", 0.5, 1,
                                       db_dir=str(db_dir))
    assert len(list(train.examples)) == 3 and len(list(evals.examples)) == 3
    with pytest.raises(DataError, match=r"row 0: unknown db_id 'music'"):
        bad = tmp_path / "empty_dbs"
        bad.mkdir()
        tr, _ = load_dataset_splits("hf", str(tmp_path / "hfjson"), "train", "dev", 0.5, 1,
                                    db_dir=str(bad))
        list(tr.examples)


# --------------------------------------------------------------------- splits


def test_split_off_is_seeded_and_holds_out_databases():
    examples = [Example(f"x{i}", f"db{i % 10}", "q", Q) for i in range(100)]
    a_train, a_eval = split_off(Dataset(examples), 0.2, seed=3)
    b_train, b_eval = split_off(Dataset(examples), 0.2, seed=3)
    assert a_eval.examples == b_eval.examples and len({e.db_id for e in a_eval.examples}) == 2
    assert not {e.db_id for e in a_train.examples} & {e.db_id for e in a_eval.examples}
    _, c_eval = split_off(Dataset(examples), 0.2, seed=4)
    assert {e.db_id for e in c_eval.examples} != {e.db_id for e in a_eval.examples}
    stream_train, stream_eval = split_off(Dataset(ExampleStream(lambda: iter(examples))), 0.2, 3)
    assert list(stream_eval.examples) == a_eval.examples
    assert list(stream_train.examples) == a_train.examples
