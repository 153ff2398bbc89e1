"""Schemas from tables.json and SQLite files, their DDL/compact text, sample rows, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from text2sql.data.values import ValueIndex, sample_rows
from text2sql.io import DataError
from text2sql.sql.schema import (
    SqliteSchemas,
    find_database,
    load_spider_tables,
    schema_from_sqlite,
    to_compact,
    to_ddl,
)


def clinic_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE doctors (doctor_id INTEGER PRIMARY KEY, name VARCHAR(40), specialty TEXT);
        CREATE TABLE "patient list" (patient_id INTEGER PRIMARY KEY, name TEXT);
        CREATE TABLE appointments (
            appointment_id INTEGER, doctor_id INTEGER, patient_id INTEGER, cost REAL,
            PRIMARY KEY (appointment_id),
            FOREIGN KEY (doctor_id) REFERENCES doctors,
            FOREIGN KEY (patient_id) REFERENCES "patient list"(patient_id));
        INSERT INTO doctors VALUES (1, 'Ada Abara', 'pediatrics'), (2, 'Bruno Berg', 'surgery');
        INSERT INTO "patient list" VALUES (1, 'Chen Costa');
        INSERT INTO appointments VALUES (1, 1, 1, 40.5);
    """)
    conn.close()
    return path


def test_schema_from_sqlite(tmp_path):
    s = schema_from_sqlite(clinic_db(tmp_path / "clinic.sqlite"))
    assert s.db_id == "clinic" and s.table_names == ["doctors", "patient list", "appointments"]
    assert s.table("DOCTORS").primary_key == ["doctor_id"]
    assert [c.type for c in s.table("doctors").columns] == ["integer", "varchar(40)", "text"]
    fks = {(f.table, f.column, f.ref_table, f.ref_column) for f in s.foreign_keys}
    # ``REFERENCES doctors`` names no column: it means the parent's primary key.
    assert fks == {("appointments", "doctor_id", "doctors", "doctor_id"),
                   ("appointments", "patient_id", "patient list", "patient_id")}


def test_ddl_and_compact_keep_only_keys_between_shown_tables(tmp_path):
    s = schema_from_sqlite(clinic_db(tmp_path / "clinic.sqlite"))
    ddl = to_ddl(s, ["appointments", "doctors"])
    assert ddl.startswith("CREATE TABLE doctors (\n  doctor_id INTEGER,")
    assert "FOREIGN KEY (doctor_id) REFERENCES doctors(doctor_id)" in ddl
    assert "patient list" not in ddl  # neither the table nor the key pointing to it
    full = to_ddl(s)
    assert 'CREATE TABLE "patient list"' in full
    assert 'FOREIGN KEY (patient_id) REFERENCES "patient list"(patient_id)' in full
    assert to_compact(s, ["doctors", "appointments"]) == (
        "doctors(doctor_id*, name, specialty)\n"
        "appointments(appointment_id*, doctor_id->doctors.doctor_id, patient_id, cost)")


def test_sample_rows_in_both_formats(tmp_path):
    db = clinic_db(tmp_path / "clinic.sqlite")
    s = schema_from_sqlite(db)
    rows = {"doctors": sample_rows(db, "doctors", 1)}
    assert rows["doctors"] == [(1, "Ada Abara", "pediatrics")]
    assert to_ddl(s, ["doctors"], rows).endswith("\n);\n-- rows: (1, 'Ada Abara', 'pediatrics')")
    assert to_compact(s, ["doctors"], rows).endswith("\n  rows: (1, 'Ada Abara', 'pediatrics')")
    assert sample_rows(db, "doctors", 0) == []


def test_spider_tables_json(sample_dir):
    schemas = load_spider_tables(sample_dir / "tables.json")
    school = schemas["school"]
    assert school.table("enrollments").primary_key == ["enrollment_id"]
    assert ("enrollments", "grade", "grades", "grade") in {
        (f.table, f.column, f.ref_table, f.ref_column) for f in school.foreign_keys}


def test_spider_labels_are_kept_when_they_say_more(tmp_path):
    entry = {"db_id": "icfp", "table_names_original": ["Inst"], "table_names": ["institution"],
             "column_names_original": [[-1, "*"], [0, "instID"], [0, "name"]],
             "column_names": [[-1, "*"], [0, "institution id"], [0, "name"]],
             "column_types": ["text", "number", "text"], "primary_keys": [1], "foreign_keys": []}
    (tmp_path / "tables.json").write_text(json.dumps([entry]))
    t = load_spider_tables(tmp_path / "tables.json")["icfp"].table("inst")
    assert t.label == "institution" and [c.label for c in t.columns] == ["institution id", None]


@pytest.mark.parametrize("entry, message", [
    ({"db_id": "x", "column_names_original": [], "column_types": []},
     r"entry 0: missing field 'table_names_original'"),
    ({"db_id": "x", "table_names_original": ["t"], "column_names_original": [[3, "c"]],
      "column_types": ["text"]}, r"entry 0: column 'c' names table #3"),
])
def test_bad_tables_json(tmp_path, entry, message):
    (tmp_path / "tables.json").write_text(json.dumps([entry]))
    with pytest.raises(DataError, match=message):
        load_spider_tables(tmp_path / "tables.json")


def test_find_database_and_lazy_schemas(tmp_path):
    (tmp_path / "a").mkdir()
    clinic_db(tmp_path / "a" / "a.sqlite")
    clinic_db(tmp_path / "b.db")
    assert find_database(tmp_path, "a") == tmp_path / "a" / "a.sqlite"
    assert find_database(tmp_path, "b") == tmp_path / "b.db"
    assert find_database(tmp_path, "c") is None
    schemas = SqliteSchemas(tmp_path)
    assert "b" in schemas and "c" not in schemas and schemas.get("c") is None
    assert schemas["b"].db_id == "b" and "patient list" in schemas["b"].table_names
    with pytest.raises(DataError, match="SQLite file not found"):
        schema_from_sqlite(tmp_path / "c.sqlite")


def test_text_that_is_not_utf8_is_read(tmp_path):
    """Real Spider databases hold bytes that are not UTF-8: read with replacement, no crash."""
    db = tmp_path / "bad.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO people VALUES (1, CAST(X'4A6F73E920426572676572' AS TEXT))")  # latin-1
    conn.execute("INSERT INTO people VALUES (2, 'Zoe Quist')")
    conn.commit()
    conn.close()
    assert schema_from_sqlite(db).table_names == ["people"]
    assert sample_rows(db, "people", 1) == [(1, "Jos\ufffd Berger")]
    index = ValueIndex.from_sqlite(db)
    assert [m.value for m in index.match("Where does Zoe Quist live?")] == ["Zoe Quist"]
    assert [m.value for m in index.match("And Jos\ufffd Berger?")] == ["Jos\ufffd Berger"]
