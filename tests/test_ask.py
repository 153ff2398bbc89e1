"""``text2sql ask`` on a SQLite file the project has never seen."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tests.conftest import ask_exit_status, asked_sql
from text2sql.ask.questions import prompt_row
from text2sql.cli import build_parser, main
from text2sql.commands.ask import format_table
from text2sql.params import PrepareParams
from text2sql.sql.dialect import column_names, transpile
from text2sql.sql.schema import schema_from_sqlite


@pytest.fixture()
def observatory(tmp_path):
    """An invented database: nothing in data/sample or Spider looks like it."""
    path = tmp_path / "observatory.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE telescope (telescope_id INTEGER PRIMARY KEY, name TEXT, aperture_m REAL);
        CREATE TABLE astronomer (astronomer_id INTEGER PRIMARY KEY, full_name TEXT, grade TEXT);
        CREATE TABLE observation (
            observation_id INTEGER PRIMARY KEY,
            telescope_id INTEGER REFERENCES telescope(telescope_id),
            astronomer_id INTEGER REFERENCES astronomer(astronomer_id),
            target TEXT, magnitude REAL);
        INSERT INTO telescope VALUES (1, 'Keck', 10.0), (2, 'Hale', 5.1), (3, 'Lovell', 76.2);
        INSERT INTO astronomer VALUES (1, 'Vera Rubin', 'A'), (2, 'Carl Sagan', 'B'),
                                      (3, 'Jocelyn Bell', 'A');
        INSERT INTO observation VALUES (1, 1, 1, 'M31', 3.4), (2, 2, 3, 'Vega', 0.03),
                                       (3, 1, 2, 'Sirius', NULL);
    """)
    conn.commit()
    conn.close()
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ask_with_the_adapter_on_a_new_database(observatory, tiny_adapter, capsys):
    before = digest(observatory)
    code = main(["ask", "--db", str(observatory), "--adapter", str(tiny_adapter),
                 "--max-new-tokens", "48", "--params", "/nonexistent.yaml", "--dialect", "sqlite",
                 "Which astronomers got an A?"])
    out, err = capsys.readouterr()
    assert "tables: astronomer" in out
    assert "SQL (generated in" in out
    # Which SQL the poorly trained model writes is its own; what ask does with it is not.
    sql = asked_sql(out)
    expected = ask_exit_status(observatory, sql)
    assert code == expected, (sql, out, err)
    assert {0: "row" in out.splitlines()[-1], 1: "text2sql ask: the query failed:" in err,
            3: "text2sql ask: refused:" in err}[code], (out, err)
    assert digest(observatory) == before


def test_ask_with_self_consistency(observatory, tiny_adapter, capsys):
    code = main(["ask", "--db", str(observatory), "--adapter", str(tiny_adapter),
                 "--max-new-tokens", "32", "--num-samples", "3", "--params", "/nonexistent.yaml",
                 "--dialect", "sqlite", "How many telescopes are there?"])
    out, err = capsys.readouterr()
    assert "of 3 samples agree;" in out
    sql = asked_sql(out)
    assert code == ask_exit_status(observatory, sql), (sql, out, err)


def test_prompt_is_built_from_the_files_schema(observatory):
    schema = schema_from_sqlite(observatory)
    row = prompt_row("Which telescope has the largest aperture?", observatory, schema,
                     PrepareParams())
    user = row["prompt"][-1]["content"]
    assert row["db_id"] == "observatory" and row["tables"] == ["telescope"]
    assert "CREATE TABLE telescope" in user and "aperture_m REAL" in user
    assert "astronomer" not in user
    assert user.endswith("Question: Which telescope has the largest aperture?")


def test_ask_runs_given_sql_and_prints_a_table(observatory, capsys):
    code = main(["ask", "--db", str(observatory), "--sql",
                 "SELECT full_name, grade FROM astronomer WHERE grade = 'A' ORDER BY full_name",
                 "Which astronomers got an A?"])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "SQL (given with --sql):"
    table = lines[2:-1]
    assert table[0].split() == ["full_name", "grade"]
    assert table[2].split() == ["Jocelyn", "Bell", "A"] and table[3].split() == ["Vera", "Rubin", "A"]
    assert lines[-1].startswith("(2 rows;")


def test_row_cap_and_nulls(observatory, capsys):
    code = main(["ask", "--db", str(observatory), "--max-rows", "2", "--sql",
                 "SELECT * FROM observation ORDER BY observation_id DESC", "q"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[2].split() == ["observation_id", "telescope_id", "astronomer_id",
                                           "target", "magnitude"]
    assert "NULL" in out
    assert "(2 rows; stopped at --max-rows 2, there are more;" in out


def test_dialect_shows_the_sql_transpiled(observatory, capsys):
    code = main(["ask", "--db", str(observatory), "--dialect", "postgres", "--sql",
                 "SELECT IFNULL(magnitude, 0) AS m FROM observation ORDER BY m LIMIT 1", "q"])
    out, _ = capsys.readouterr()
    assert code == 0
    # SQLite sorts NULLs first; sqlglot keeps that meaning in PostgreSQL.
    assert "SQL (postgres):\n  SELECT COALESCE(magnitude, 0) AS m FROM observation ORDER BY m " \
           "NULLS FIRST LIMIT 1" in out
    assert transpile("SELECT strftime('%Y', '2024-01-05')", "duckdb").startswith("SELECT STRFTIME")


@pytest.mark.parametrize(("sql", "why"), [
    ("DELETE FROM astronomer", "the SQL is a DELETE statement"),
    ("DROP TABLE telescope", "the SQL is a DROP statement"),
    ("SELECT 1; DELETE FROM astronomer", "the SQL holds 2 statements"),
    ("UPDATE astronomer SET grade = 'F'", "the SQL is an UPDATE statement"),
    ("ATTACH DATABASE 'x.db' AS x", "the SQL is an ATTACH statement"),
    ("PRAGMA writable_schema = 1", "the SQL is a PRAGMA statement"),
    ("", "the model wrote no SQL"),
])
def test_anything_but_one_read_only_query_is_refused(observatory, capsys, sql, why):
    before = digest(observatory)
    code = main(["ask", "--db", str(observatory), "--sql", sql, "q"])
    _, err = capsys.readouterr()
    assert code == 3
    assert f"refused: {why}." in err and "nothing was executed" in err
    assert digest(observatory) == before


def test_sql_that_would_hang_the_parser_is_refused(observatory, capsys):
    loop = "SELECT target FROM observation " + "JOIN telescope " * 40
    assert main(["ask", "--db", str(observatory), "--dialect", "mysql", "--sql", loop, "q"]) == 3
    assert "more than 10 JOINs in a row without ON" in capsys.readouterr().err


def test_an_empty_result_still_shows_its_columns(observatory, capsys):
    assert main(["ask", "--db", str(observatory), "--sql",
                 "SELECT name, aperture_m FROM telescope WHERE aperture_m > 100", "q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["name", "aperture_m"] and lines[-1].startswith("(0 rows;")


def test_failures_are_reported_with_their_kind(observatory, capsys):
    assert main(["ask", "--db", str(observatory), "--sql", "SELECT nope FROM telescope", "q"]) == 1
    assert "no such column: nope [unknown_column]" in capsys.readouterr().err
    slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    assert main(["ask", "--db", str(observatory), "--timeout", "0.2", "--sql", slow, "q"]) == 1
    assert "[timeout] (after the 0.2 s limit; raise --timeout)" in capsys.readouterr().err


def test_bad_arguments_say_what_to_do(observatory, tmp_path, capsys):
    assert main(["ask", "--db", str(observatory), "--dialect", "klingon", "--sql", "SELECT 1",
                 "q"]) == 2
    assert "unknown dialect (known: athena, bigquery" in capsys.readouterr().err
    assert main(["ask", "--db", str(tmp_path / "missing.sqlite"), "q"]) == 2
    assert "missing.sqlite: SQLite file not found (--db)" in capsys.readouterr().err
    notes = tmp_path / "notes.sqlite"
    notes.write_text("not a database, just text " * 40)
    assert main(["ask", "--db", str(notes), "q"]) == 2
    assert "notes.sqlite: cannot read it as a SQLite database (file is not a database)" \
        in capsys.readouterr().err
    assert main(["ask", "--db", str(observatory), "--adapter", str(tmp_path), "q"]) == 2
    assert "no adapter_config.json; run the train stage first" in capsys.readouterr().err


def test_help_explains_it_all(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ask", "--help"])
    out = capsys.readouterr().out
    for words in ("read-only", "--timeout", "--max-rows", "--dialect", "--num-samples",
                  "refused", "models/aligned", "linked", "examples:"):
        assert words in out, words


def test_column_names_and_table_format():
    schema = schema_from_sqlite.__globals__["Schema"]("db", [])
    assert column_names("SELECT a AS x, b, count(*) FROM t", schema, 3) == ["x", "b", "COUNT(*)"]
    assert column_names("SELECT a, b FROM t", schema, 3) == ["col1", "col2", "col3"]
    assert column_names("SELECT a, b FROM t", schema, None) == ["a", "b"]  # no rows to count
    assert format_table(["a"], [(None,), (1.5,)]).split() == ["a", "----", "NULL", "1.5"]


def test_sql_needs_no_question(observatory, capsys):
    # The example of `text2sql ask --help`.
    assert main(["ask", "--db", str(observatory), "--sql", "SELECT count(*) FROM telescope"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split() == ["count(*)"] and "(1 row;" in out
    assert main(["ask", "--db", str(observatory)]) == 2
    assert "give a question, or your own SQL with --sql" in capsys.readouterr().err


@pytest.mark.parametrize(("sql", "why"), [
    ("WITH a AS (SELECT 1) DELETE FROM astronomer", "the SQL is a DELETE statement"),  # text check
    ("SELECT * FROM pragma_table_info('astronomer')", "not authorized"),  # SQLite's authorizer
])
def test_writes_behind_a_query_are_refused_not_failed(observatory, capsys, sql, why):
    before = digest(observatory)
    assert main(["ask", "--db", str(observatory), "--sql", sql]) == 3
    err = capsys.readouterr().err
    assert "refused: " in err and why in err
    assert digest(observatory) == before


def test_long_values_are_cut_with_a_marker(observatory, capsys):
    assert main(["ask", "--db", str(observatory), "--width", "20", "--sql",
                 "SELECT hex(zeroblob(500)) AS h, zeroblob(300) AS b"]) == 0
    out = capsys.readouterr().out
    assert "00000000000000000000… [+980 chars]" in out and "<BLOB 300 bytes>" in out
    assert main(["ask", "--db", str(observatory), "--max-bytes", "1000", "--sql",
                 "SELECT hex(zeroblob(600)) FROM telescope"]) == 1
    assert "[too_large] (raise --max-bytes, or select less)" in capsys.readouterr().err
