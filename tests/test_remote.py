"""The S3 remote, against a real S3-protocol server on loopback (moto, as DVC's own tests use).

Datasets, the adapter, predictions and evaluation results go to the remote with
``dvc push``; a fresh clone gets them back with ``dvc pull``, byte for byte. A push cut
off by the server going away fails with a clear error, leaves the workspace, the cache
and what already reached the bucket intact, and the next ``dvc push`` completes.
Credentials come from the environment or an AWS profile and never enter .dvc/config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline_run import REPO, TIMINGS, copy_of_base_run, dvc, git, report_timings

KEY_ID, SECRET = "text2sql-test-key-id", "text2sql-test-secret"


class S3Server:
    """moto's S3 served on 127.0.0.1 that can be told to go away in the middle of a push.

    After ``go_away_after(n)``, the n+1-th object upload gets its connection closed with
    no answer, the server stops listening, and every later request on a kept-alive
    connection is cut too: what a client sees when the server crashes or the network
    drops. ``start()`` again serves the same buckets on the same port (moto keeps its
    state in this process).
    """

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.app = DomainDispatcherApplication(create_backend_app)
        self.port = 0
        self.uploads = 0
        self.limit: int | None = None
        self.gone = threading.Event()
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self.limit, self.uploads = None, 0
        self.gone.clear()
        self._server = make_server("127.0.0.1", self.port, self, threaded=True,
                                   request_handler=MotoRequestHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def go_away_after(self, uploads: int) -> None:
        with self._lock:
            self.limit, self.uploads = uploads, 0

    def __call__(self, environ, start_response):
        is_upload = environ["REQUEST_METHOD"] in ("PUT", "POST") and \
            environ.get("PATH_INFO", "").strip("/").count("/") >= 1
        with self._lock:
            cut = self.gone.is_set() or (is_upload and self.limit is not None
                                         and self.uploads >= self.limit)
            if is_upload and not cut:
                self.uploads += 1
            if cut and not self.gone.is_set():
                self.gone.set()
                threading.Thread(target=self.stop, daemon=True).start()
        if cut:
            conn = environ.get("werkzeug.socket")
            if conn is not None:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            return []
        return self.app(environ, start_response)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET, region_name="us-east-1")

    def objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for o in page.get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def aws_env(tmp: Path, with_keys: bool = True) -> dict[str, str]:
    """No ambient AWS configuration: keys only when asked, no metadata-service lookups."""
    e = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
         "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
         "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials")}
    if with_keys:
        e.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    return e


def workspace(root: Path) -> dict[str, str]:
    """md5 of every file in the working tree, outside git's and DVC's own folders and the
    runtime measurements of the last run on this machine (tracked by neither)."""
    skip = (".git/", ".dvc/cache/", ".dvc/tmp/", ".dvc/config.local", "metrics/runtime/")
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)}


def cache_objects(repo: Path) -> set[str]:
    """Keys (``files/md5/ab/cdef...``) of the objects in the local DVC cache."""
    root = repo / ".dvc" / "cache"
    return {p.relative_to(root).as_posix() for p in (root / "files" / "md5").rglob("*")
            if p.is_file()}


def key(md5: str) -> str:
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def pushed_objects(repo: Path) -> set[str]:
    """Keys of what ``dvc push`` sends: the cached outputs in dvc.lock and the data in
    ``.dvc`` files, folders with their files. (Outputs with ``cache: false`` are in git.)"""
    entries = [o for stage in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values()
               for o in stage.get("outs", [])]
    entries += [o | {"path": (f.parent / o["path"]).relative_to(repo).as_posix()}
                for f in repo.rglob("*.dvc") if f.is_file()
                for o in yaml.safe_load(f.read_text())["outs"]]
    keys = set()
    for out in entries:
        in_git = subprocess.run(["git", "check-ignore", "-q", out["path"]], cwd=repo).returncode
        if in_git:  # not ignored by git: tracked there, not in the DVC cache
            continue
        keys.add(key(out["md5"]))
        if out["md5"].endswith(".dir"):
            listing = json.loads((repo / ".dvc" / "cache" / key(out["md5"])).read_text())
            keys.update(key(e["md5"]) for e in listing)
    return keys


def add_remote(repo: Path, name: str, bucket: str, s3: S3Server, default: bool) -> None:
    s3.client().create_bucket(Bucket=bucket)
    dvc("remote", "add", *(["-d"] if default else []), name, f"s3://{bucket}/text2sql", cwd=repo)
    dvc("remote", "modify", name, "endpointurl", s3.endpoint, cwd=repo)
    git("add", ".dvc/config", cwd=repo)
    git("commit", "-qm", f"remote {name}", cwd=repo)


def clone_and_pull(repo: Path, dest: Path, env: dict[str, str], *pull_args: str) -> Path:
    git("clone", "-q", str(repo), str(dest), cwd=repo.parent)
    start = time.perf_counter()
    dvc("pull", *pull_args, cwd=dest, **env)
    TIMINGS[f"dvc pull {' '.join(pull_args)}".strip()] = time.perf_counter() - start
    return dest


@pytest.fixture(scope="module")
def s3():
    # The dev server logs each request, and a traceback for each connection cut on purpose.
    log = logging.getLogger("werkzeug")
    level = log.level
    log.setLevel(logging.CRITICAL)
    server = S3Server()
    server.start()
    yield server
    server.stop()
    log.setLevel(level)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The reduced run, plus a raw dataset a user tracks with ``dvc add``."""
    repo = copy_of_base_run(tmp_path_factory, "remote")
    raw = repo / "data" / "raw"
    raw.mkdir()
    (raw / "questions.jsonl").write_text("".join(
        json.dumps({"question": f"How many rows in table {i}?", "db_id": "clinic"}) + "\n"
        for i in range(50)))
    dvc("add", "data/raw", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "raw data", cwd=repo)
    return repo


@pytest.mark.slow
def test_default_remote_is_a_folder_beside_the_repository(repo):
    """As shipped, `dvc push` works with no setup: into ../text2sql-storage."""
    assert dvc("remote", "default", "--project", cwd=REPO).stdout.strip() == "local"
    dvc("push", "-r", "local", cwd=repo)
    storage = repo.parent / "text2sql-storage"
    assert {p.relative_to(storage).as_posix() for p in storage.rglob("*") if p.is_file()} == \
        pushed_objects(repo)
    assert dvc("status", "--cloud", "-r", "local", cwd=repo).stdout.strip() == \
        "Cache and remote 'local' are in sync."


@pytest.mark.slow
def test_push_fresh_clone_pull_round_trip(s3, repo, tmp_path):
    add_remote(repo, "storage", "text2sql-round-trip", s3, default=True)
    config = (repo / ".dvc" / "config").read_text()
    assert "remote = storage" in config and s3.endpoint in config
    assert KEY_ID not in config and SECRET not in config  # credentials stay in the environment

    start = time.perf_counter()
    pushed = dvc("push", cwd=repo, **aws_env(tmp_path))
    TIMINGS["dvc push (S3, reduced run)"] = time.perf_counter() - start
    expected = pushed_objects(repo)
    assert len(expected) >= 10, expected  # raw data, prepared data, adapter, predictions...
    assert key(yaml.safe_load((repo / "data/raw.dvc").read_text())["outs"][0]["md5"]) in expected
    assert f"{len(expected)} files pushed" in pushed.stdout + pushed.stderr
    remote = s3.objects("text2sql-round-trip")
    assert {k.removeprefix("text2sql/") for k in remote} == expected
    assert dvc("status", "--cloud", cwd=repo, **aws_env(tmp_path)).stdout.strip() == \
        "Cache and remote 'storage' are in sync."

    # The adapter is a model artifact (dvc.yaml `artifacts:`); once registered with a
    # version tag, `dvc artifacts get` fetches it from the remote without a clone's cache.
    git("tag", "-a", "text2sql-adapter@v0.1.0", "-m", "Registering text2sql-adapter v0.1.0",
        cwd=repo)
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    dvc("artifacts", "get", str(clone), "text2sql-adapter", "-o", str(tmp_path / "artifact"),
        cwd=tmp_path, **aws_env(tmp_path))
    adapter = {k.removeprefix("models/aligned/"): v for k, v in workspace(repo).items()
               if k.startswith("models/aligned/")}
    assert workspace(tmp_path / "artifact") == adapter and "adapter_config.json" in adapter

    # A fresh clone has no credentials: pull fails and says so, nothing is half-written.
    denied = dvc("pull", cwd=clone, check=False, **aws_env(tmp_path, with_keys=False))
    assert denied.returncode != 0
    assert "credentials" in (denied.stdout + denied.stderr).lower()

    # With an AWS profile named in the clone's untracked config.local, it pulls everything.
    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[text2sql-ci]\naws_access_key_id = {KEY_ID}\n"
                     f"aws_secret_access_key = {SECRET}\n")
    dvc("remote", "modify", "--local", "storage", "profile", "text2sql-ci", cwd=clone)
    env = aws_env(tmp_path, with_keys=False) | {"AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    start = time.perf_counter()
    dvc("pull", cwd=clone, **env)
    TIMINGS["dvc pull (S3, fresh clone)"] = time.perf_counter() - start

    assert dvc("status", cwd=clone).stdout.strip() == "Data and pipelines are up to date."
    assert workspace(clone) == workspace(repo)
    assert git("status", "--porcelain", cwd=clone) == ""
    report_timings("remote")


@pytest.mark.slow
def test_interrupted_push_loses_nothing_and_resumes(s3, repo, tmp_path):
    add_remote(repo, "flaky", "text2sql-interrupted", s3, default=False)
    before = workspace(repo)
    local = cache_objects(repo)
    expected = pushed_objects(repo)

    s3.go_away_after(3)
    start = time.perf_counter()
    # Fewer retries than botocore's default (5) only so that giving up takes seconds.
    failed = dvc("push", "-r", "flaky", cwd=repo, check=False, timeout=300,
                 **aws_env(tmp_path), AWS_MAX_ATTEMPTS="2")
    TIMINGS["dvc push cut off by the server going away"] = time.perf_counter() - start
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0 and s3.gone.is_set()
    # DVC names the files it could not send and the endpoint that went away.
    assert f'Could not connect to the endpoint URL: "{s3.endpoint}/text2sql-interrupted/' in out, \
        out[-2000:]
    assert "ERROR: failed to transfer" in out, out[-2000:]

    # Nothing lost: workspace and cache as before, the repository still consistent.
    assert workspace(repo) == before
    assert cache_objects(repo) == local
    assert dvc("status", cwd=repo).stdout.strip() == "Data and pipelines are up to date."

    s3.start()  # the server comes back, same port, same buckets
    partial = s3.objects("text2sql-interrupted")
    assert 1 <= len(partial) < len(expected)
    for key, body in partial.items():  # every object that arrived is whole
        assert hashlib.md5(body).hexdigest() == Path(key).parent.name + \
            Path(key).name.removesuffix(".dir"), key
    missing = dvc("status", "--cloud", "-r", "flaky", cwd=repo, **aws_env(tmp_path)).stdout
    assert "new:" in missing and "deleted:" not in missing

    again = dvc("push", "-r", "flaky", cwd=repo, **aws_env(tmp_path))
    assert f"{len(expected) - len(partial)} files pushed" in again.stdout + again.stderr
    assert {k.removeprefix("text2sql/") for k in s3.objects("text2sql-interrupted")} == expected
    assert dvc("status", "--cloud", "-r", "flaky", cwd=repo,
               **aws_env(tmp_path)).stdout.strip() == "Cache and remote 'flaky' are in sync."

    clone = clone_and_pull(repo, tmp_path / "clone", aws_env(tmp_path), "-r", "flaky")
    assert workspace(clone) == workspace(repo)
    report_timings("remote")
