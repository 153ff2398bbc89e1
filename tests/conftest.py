"""Shared fixtures: the committed sample dataset, prepared rows, and a tiny trained adapter."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
SPIDER_TRAIN = REPO.parent / "shared" / "spider-train"
SCHOOL = SAMPLE / "database" / "school" / "school.sqlite"


def make_shop(db: Path) -> Path:
    """A SQLite file with one 2,000-row table ``item(id, name, price)``: big enough for
    runaway joins and memory bombs."""
    import sqlite3

    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)",
                     [(i, f"item{i}", i * 1.5) for i in range(2000)])
    conn.commit()
    conn.close()
    return db


def duckdb_copy(sqlite_path: Path, out: Path) -> Path:
    """A DuckDB file holding ``sqlite_path``'s tables, keys and rows (SQLite's own CREATE
    TABLE statements, which DuckDB reads)."""
    import sqlite3

    import duckdb

    source = sqlite3.connect(sqlite_path)
    target = duckdb.connect(str(out))
    for name, ddl in source.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                    "ORDER BY rowid").fetchall():
        target.execute(ddl)
        rows = source.execute(f'SELECT * FROM "{name}"').fetchall()
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            target.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
    target.close()
    source.close()
    return out


def parquet_folder(sqlite_path: Path, folder: Path, fmt: str = "parquet") -> Path:
    """Each table of ``sqlite_path`` as ``folder/<table>.parquet`` (or ``.csv``), written by
    DuckDB's COPY from a DuckDB copy of it."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    db = duckdb_copy(sqlite_path, folder.parent / f"{folder.name}-source.duckdb")
    conn = duckdb.connect(str(db))
    for (name,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall():
        options = "(FORMAT parquet)" if fmt == "parquet" else "(HEADER)"
        conn.execute(f"COPY \"{name}\" TO '{folder / name}.{fmt}' {options}")
    conn.close()
    db.unlink()
    return folder


@pytest.fixture()
def shop(tmp_path: Path) -> Path:
    return make_shop(tmp_path / "shop" / "shop.sqlite")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def prepared_rows() -> dict[str, list[dict]]:
    """The sample data run through the prepare core with the default params, in memory."""
    from text2sql.data.prepare import prepare_in_memory
    from text2sql.params import load_params

    return prepare_in_memory(load_params("prepare", REPO / "params.yaml"), root=str(REPO))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, prepared_rows) -> Path:
    """A built-in model trained briefly (1 epoch, 256 examples): real weights, poor quality."""
    from text2sql.params import load_params
    from text2sql.training.sft import train

    params = load_params("train", REPO / "params.yaml").model_copy(update={"epochs": 1.0})
    out = tmp_path_factory.mktemp("adapter")
    train(params, prepared_rows["train"][:256], out)
    return out


@pytest.fixture(scope="session")
def cluster():
    """A throwaway PostgreSQL server holding the sample school database (skipped, with the
    reason, where PostgreSQL's binaries are not installed)."""
    from tests.postgres_server import Cluster, load_sqlite, why_no_server

    why = why_no_server()
    if why:
        pytest.skip(why)
    server = Cluster()
    try:
        load_sqlite(server, SCHOOL, "school")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reader_url(cluster) -> str:
    from tests.postgres_server import READER, READER_PASSWORD

    return cluster.url("school", READER, READER_PASSWORD)


@pytest.fixture(scope="session")
def superuser_url(cluster) -> str:
    return cluster.url("school")


@pytest.fixture(scope="session")
def school_duckdb(tmp_path_factory) -> Path:
    """The sample school database as a DuckDB file."""
    return duckdb_copy(SCHOOL, tmp_path_factory.mktemp("duckdb") / "school.duckdb")


@pytest.fixture(params=["sqlite", "postgresql", "duckdb"])
def database(request):
    """The school database as each engine holds it: a SQLite file, a PostgreSQL database,
    a DuckDB file."""
    from text2sql.ask.database import open_database

    if request.param == "sqlite":
        db = open_database(SCHOOL)
    elif request.param == "duckdb":
        db = open_database(request.getfixturevalue("school_duckdb"))
    else:
        db = open_database(request.getfixturevalue("reader_url"))
    yield db
    db.close()


def ask_exit_status(db: object, sql: str) -> int:
    """The exit status ``text2sql ask`` must give for ``sql`` on ``db`` (a SQLite file or a
    ``PostgresDatabase``), from the guards and runners of :mod:`text2sql.sql` alone: 3
    refused, 1 failed, 0 answered. Tests of a model's answer check it against this, since
    which SQL a barely trained model writes is not for the test to say."""
    from text2sql.sql.parse import too_hard_to_parse
    from text2sql.sql.sqlite import NOT_READ_ONLY, check_read_only_query, run_query

    if too_hard_to_parse(sql) or check_read_only_query(sql)[0] is not None:
        return 3
    result = run_query(db, sql) if isinstance(db, (str, Path)) else db.run(sql)
    return 0 if result.ok else 3 if result.error == NOT_READ_ONLY else 1


def asked_sql(out: str) -> str:
    """The SQL ``text2sql ask`` printed first (after ``SQL (generated ...):`` or ``SQL (N of
    M samples agree; ...):``), up to the next ``SQL (`` header; run with ``--dialect`` so
    that a header follows it when a table does."""
    lines = out.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("SQL ("))
    sql = []
    for line in lines[start + 1:]:
        if line.startswith("SQL ("):
            break
        sql.append(line.removeprefix("  "))
    sql_text = "\n".join(sql)
    return "" if sql_text == "(the model wrote no SQL)" else sql_text


def pytest_configure(config):
    """Unsloth reads its settings once, when imported: the tests import it directly too."""
    from text2sql.modeling.lora import configure_unsloth_environment

    configure_unsloth_environment()


# What a test needs, from the fixtures it uses (directly or through other fixtures). Each of
# these makes it slow: `uv run pytest -m "not slow"` is the fast tier (README, Development).
NEEDS = {
    "tiny_adapter": "training", "stand_in": "training", "tied_model_dir": "training",
    "workdir": "training", "exported": "training",
    "pipeline": "dvc", "two_runs": "dvc", "small_repo": "dvc", "repo_copy": "dvc",
    "queued": "dvc", "clone": "dvc", "two_commits": "dvc", "repo": "dvc", "s3": "dvc",
    "rebuilt": "dvc", "rebuilt_conversations": "dvc",
    "cluster": "postgres",
}


def pytest_collection_modifyitems(config, items):
    """Mark each test with what it needs (:data:`NEEDS`; ``browser`` tests are marked where
    they are written) and ``slow`` when it needs any of it; skip ``cuda``-marked tests, with
    the reason, where no NVIDIA GPU is present."""
    for item in items:
        needs = {NEEDS[name] for name in getattr(item, "fixturenames", ()) if name in NEEDS}
        needs |= {m for m in ("training", "dvc", "postgres", "browser") if m in item.keywords}
        for need in sorted(needs):
            item.add_marker(need)
        if needs and "slow" not in item.keywords:
            item.add_marker("slow")
    cuda_items = [item for item in items if "cuda" in item.keywords]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (CUDA); none is present on this machine")
    for item in cuda_items:
        item.add_marker(skip)
