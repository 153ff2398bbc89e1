"""Fuzzy value retrieval (``prepare.value_retrieval: fuzzy``) and M-Schema's example values,
on real SQLite files: the sample databases and small ones written here."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from text2sql.data import retrieval
from text2sql.data.prompts import PromptOptions, make_prompt
from text2sql.data.retrieval import ValueRetriever
from text2sql.data.values import ValueIndex, column_examples, value_index
from text2sql.sql.schema import load_spider_tables, schema_from_sqlite

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
CLINIC = SAMPLE / "database" / "clinic" / "clinic.sqlite"
SHOP = SAMPLE / "database" / "shop" / "shop.sqlite"


@pytest.fixture()
def places(tmp_path: Path) -> Path:
    """Codes, country names, typos' targets: what a question names without the stored spelling."""
    path = tmp_path / "places" / "places.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, sex TEXT, state TEXT,
                             country TEXT, city TEXT);
        INSERT INTO people VALUES
          (1, 'Roy Sweazy', 'M', 'CA', 'USA', 'Los Angeles'),
          (2, 'Brittany Harris', 'F', 'FL', 'Italy', 'Miami'),
          (3, 'Annaual Meeting Host', 'F', 'NY', 'United Kingdom', 'New York City'),
          (4, 'Dana Falk', 'M', 'CO', 'Canada', 'Denver');
    """)
    conn.commit()
    conn.close()
    return path


def _found(db: Path, question: str) -> list[tuple[str, str]]:
    return [(m.column, m.value) for m in value_index(db).retrieve(question)]


@pytest.mark.parametrize("question, column, value", [
    ("Which people are named Britanny Harris?", "name", "Brittany Harris"),  # a typo
    ("Who was called ROY SWEAZ?", "name", "Roy Sweazy"),                     # a cut word
    ("How many Italian people are there?", "country", "Italy"),               # a word form
    ("Who lives in the US?", "country", "USA"),                               # an abbreviation
    ("Who lives in the UK?", "country", "United Kingdom"),                    # initials
    ("List the people from LA.", "city", "Los Angeles"),
    ("How many people live in California?", "state", "CA"),                   # a state code
    ("How many female people are there?", "sex", "F"),                        # a one-letter code
])
def test_retrieval_finds_values_spelled_otherwise(places, question, column, value):
    assert (column, value) in _found(places, question)
    assert (column, value) not in [(m.column, m.value) for m in value_index(places).match(question)]


def test_retrieval_is_bounded_per_column_and_scored():
    entries = [("t", "name", v) for v in ("Quinn Berg", "Quinn Berge", "Quin Berg", "Quinn Bergs",
                                          "Quinn Burg", "Ada Lovelace")] + [("t", "city", "Berg")]
    found = ValueIndex(entries).retrieve("orders of Quinn Berg")
    assert sum(m.column == "name" for m in found) == retrieval.PER_COLUMN
    assert all(0 < m.score <= 1 for m in found)
    assert [m.value for m in found if m.column == 'name'][0] == "Quinn Berg"
    assert ValueIndex(entries).retrieve("how many tables are there") == []


def test_retrieval_caps_the_index(monkeypatch):
    monkeypatch.setattr(retrieval, "MAX_VALUES", 3)
    r = ValueRetriever({("t", "c"): ["alpha", "beta", "gamma", "delta"]})
    assert len(r) == 3 and not r.complete


def test_a_live_database_index_retrieves_too():
    """PostgreSQL builds ``ValueIndex(entries, schema_words)`` from the values it reads: the
    same object retrieves, with no SQLite file behind it."""
    index = ValueIndex([("customers", "name", "Quinn Falk"), ("customers", "city", "Dunmore")],
                       {"customer", "name", "citi"})
    assert sorted(m.value for m in index.retrieve("orders of Quin Falk from Dunmor")) == [
        "Dunmore", "Quinn Falk"]


def test_fuzzy_prompt_adds_hints_after_the_exact_ones():
    """On a real sample database: a misspelt name gets its hint with ``fuzzy`` only; the
    schema shown (the linking) is the same, and the exact hints come first."""
    schema = load_spider_tables(SAMPLE / "tables.json")["shop"]
    name = "Quinn Falk"  # a customer of the sample shop
    assert ("customers", "name", name) in value_index(SHOP).phrases[("quinn", "falk")]
    question = "Which products did the customer Quin Falk order from the kitchen category?"
    exact = make_prompt(question, schema, SHOP, options=PromptOptions(value_retrieval="exact"))
    fuzzy = make_prompt(question, schema, SHOP)  # the default
    assert ("customers", "name", name) in fuzzy.values
    assert ("customers", "name", name) not in exact.values
    assert fuzzy.tables == exact.tables and fuzzy.schema_text == exact.schema_text
    assert exact.values and fuzzy.values[:len(exact.values)] == exact.values
    with pytest.raises(ValueError, match="value_retrieval"):
        PromptOptions(value_retrieval="bm25")


def test_column_examples_read_distinct_values():
    schema = load_spider_tables(SAMPLE / "tables.json")["clinic"]
    ex = column_examples(CLINIC, schema, ["doctors"])
    assert list(ex) == ["doctors"]
    assert ex["doctors"]["doctor_id"] == [1, 2, 3]
    assert len(set(ex["doctors"]["specialty"])) == 3


def test_mschema_on_a_real_sample_database():
    """XiYan's M-Schema: types, primary keys, examples, and the foreign keys between the
    tables shown; labels (Spider's natural-language names) become comments."""
    from text2sql.sql.schema import to_mschema

    schema = load_spider_tables(SAMPLE / "tables.json")["clinic"]
    tables = ["doctors", "appointments"]
    examples = column_examples(CLINIC, schema, tables)
    text = to_mschema(schema, tables, examples=examples)
    doctors = examples["doctors"]
    assert text.splitlines()[:7] == [
        "【DB_ID】 clinic",
        "【Schema】",
        "# Table: doctors",
        "[",
        "(doctor_id:NUMBER, Primary Key, Examples: [1, 2, 3]),",
        f"(name:TEXT, Examples: [{', '.join(doctors['name'])}]),",
        f"(specialty:TEXT, Examples: [{', '.join(doctors['specialty'])}]),",
    ]
    assert text.endswith("【Foreign keys】\nappointments.doctor_id=doctors.doctor_id")
    assert "patients" not in text  # neither the table nor its key
    labelled = schema_from_sqlite(CLINIC)
    labelled.tables[0].label = "medical doctors"
    labelled.tables[0].columns[2] = type(labelled.tables[0].columns[2])(
        "specialty", "text", "field of medicine")
    assert "# Table: doctors, medical doctors\n[\n(doctor_id:INTEGER, Primary Key),\n" \
           "(name:TEXT),\n(specialty:TEXT, field of medicine)," in to_mschema(labelled, ["doctors"])


def test_mschema_prompt_shows_examples():
    schema = load_spider_tables(SAMPLE / "tables.json")["clinic"]
    linked = make_prompt("How many doctors work in cardiology?", schema, CLINIC,
                         options=PromptOptions(schema_format="mschema"))
    assert linked.schema_text.startswith("【DB_ID】 clinic\n【Schema】\n# Table: doctors\n[")
    assert "Examples: [" in linked.schema_text
