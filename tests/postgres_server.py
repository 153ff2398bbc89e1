"""A throwaway PostgreSQL server for tests: its own data folder, a free port on 127.0.0.1,
stopped and removed afterwards; and a loader that copies a SQLite database into it.

initdb and postgres refuse to run as root: as root, the cluster runs as the unprivileged
``postgres`` user (``runuser``). The binaries are looked up on PATH, then in Debian's
``/usr/lib/postgresql/<version>/bin`` (where the ``postgresql`` package puts them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"
READER, READER_PASSWORD = "reader", "s3cret-Reader-pw"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl, or ``None`` when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def why_no_server() -> str | None:
    """Why no throwaway server can be started here, or ``None`` when one can."""
    if find_bin_dir() is None:
        return ("needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql); "
                "none found on PATH or in /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root, and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root, and there is no runuser to run the server as 'postgres'"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running throwaway cluster; ``url(user, password, db)`` to reach it over TCP."""

    def __init__(self) -> None:
        self.bin = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="text2sql-pg-"))
        self.data, self.port = self.root / "data", free_port()
        self.as_user = os.geteuid() == 0
        try:
            self._start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _start(self) -> None:
        if self.as_user:
            uid = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, uid.pw_uid, uid.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8", "--no-sync",
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        hba = self.data / "pg_hba.conf"
        # the superuser may come in over TCP without a password (fixtures); others need theirs
        hba.write_text(f"host all {SUPERUSER} 127.0.0.1/32 trust\n" + hba.read_text())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                  "start")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_user:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}"
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def url(self, db: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def admin(self, db: str = "postgres"):
        import psycopg

        return psycopg.connect(self.url(db), autocommit=True)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_TYPES = {"integer": "bigint", "int": "bigint", "real": "double precision", "text": "text",
          "number": "numeric", "numeric": "numeric"}


def load_sqlite(cluster: Cluster, sqlite_path: Path, db: str) -> None:
    """Create database ``db`` holding ``sqlite_path``'s tables, keys and rows, readable (only
    SELECT) by the role :data:`READER`."""
    from text2sql.sql.schema import quote_identifier as q
    from text2sql.sql.schema import schema_from_sqlite

    schema = schema_from_sqlite(sqlite_path)
    with cluster.admin() as conn:
        conn.execute(f"CREATE DATABASE {q(db)}")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [READER]).fetchone():
            conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")
    source = sqlite3.connect(sqlite_path)
    with cluster.admin(db) as conn:
        for t in schema.tables:
            cols = [f"{q(c.name)} {_TYPES.get(c.type.lower(), 'text')}" for c in t.columns]
            if t.primary_key:
                cols.append(f"PRIMARY KEY ({', '.join(q(c) for c in t.primary_key)})")
            conn.execute(f"CREATE TABLE {q(t.name)} ({', '.join(cols)})")
            with conn.cursor().copy(f"COPY {q(t.name)} FROM STDIN") as copy:
                for row in source.execute(f"SELECT * FROM {q(t.name)}"):
                    copy.write_row(row)
        for fk in schema.foreign_keys:
            conn.execute(f"ALTER TABLE {q(fk.table)} ADD FOREIGN KEY ({q(fk.column)}) "
                         f"REFERENCES {q(fk.ref_table)} ({q(fk.ref_column)})")
        # docs/postgresql.md's read-only role
        conn.execute(f"GRANT CONNECT ON DATABASE {q(db)} TO {READER}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}")
    source.close()
