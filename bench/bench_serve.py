"""Load on ``text2sql serve``: concurrent clients against the built-in model on 127.0.0.1.

    python bench/bench_serve.py                           # 8 clients, 2 x 30 s
    python bench/bench_serve.py --clients 16 --seconds 60 --adapter models/aligned

Starts ``text2sql serve`` on a free port over a copy of the sample databases, then runs
two phases of --seconds / 2 each with --clients clients sending requests back to back:
"clean" (questions to the model and good SQL) and "mixed" (the same plus runaway
queries, which must time out, and huge cartesian results, which must truncate). It
prints, per phase and kind, requests/s and p50/p95/max latency, and the 4xx/5xx
counts; then checks: zero 5xx, runaways timed out, huge results truncated, good
SQL's p95 in the mixed phase within --timeout of the clean phase, and every
database's sha256 unchanged. Without --adapter (and no models/aligned), the
built-in model is trained for a few steps first (real weights, poor SQL: it writes
up to infer.max_new_tokens tokens, the most work a question can cost).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from text2sql.commands import ADAPTER_CONFIG, DEFAULT_ADAPTER

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["How many students are there?", "Which students live in Avonlea?",
             "List the courses and their credits.", "Who teaches the most courses?",
             "What is the average grade points?", "Which teachers work in Physics?"]
GOOD_SQL = ["SELECT count(*) FROM students",
            "SELECT s.name, c.title FROM enrollments e JOIN students s USING (student_id) "
            "JOIN courses c USING (course_id) WHERE e.grade = 'A'",
            "SELECT year, count(*) FROM students GROUP BY year ORDER BY year"]
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
HUGE = "SELECT * FROM students, courses, teachers, enrollments"
MIXES = {"clean": {"question": 1, "sql": 1},
         "mixed": {"question": 4, "sql": 4, "runaway": 1, "huge": 1}}


def builtin_adapter(workdir: Path) -> Path:
    """The built-in model trained for a few steps (seconds), as the train stage makes it."""
    from text2sql.data.prepare import prepare_in_memory
    from text2sql.params import load_params
    from text2sql.training.sft import train

    rows = prepare_in_memory(load_params("prepare", REPO / "params.yaml"), root=str(REPO))["train"]
    params = load_params("train", REPO / "params.yaml").model_copy(update={"epochs": 1.0})
    train(params, rows[:32], workdir / "adapter")
    return workdir / "adapter"


def sha256s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.sqlite"))}


def start(databases: Path, adapter: Path, port: int, timeout_s: float, log: Path
          ) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "text2sql.cli", "serve", "--databases", str(databases),
         "--adapter", str(adapter), "--port", str(port), "--timeout", str(timeout_s),
         "--log-level", "warning"], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if post(port, "GET", "/healthz", None)[0] == 200:
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"bench_serve: the server did not start:\n{log.read_text()[-3000:]}")


def post(port: int, method: str, path: str, body: dict | None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def request_of(kind: str, rng: random.Random) -> dict:
    if kind == "question":
        return {"db": "school", "question": rng.choice(QUESTIONS)}
    return {"db": "school", "sql": {"sql": rng.choice(GOOD_SQL), "runaway": RUNAWAY,
                                    "huge": HUGE}[kind]}


def phase(port: int, mix: dict[str, int], clients: int, seconds: float) -> list[tuple]:
    """``(kind, status, seconds, answer)`` of every request sent in ``seconds``."""
    results: list[tuple] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    kinds, weights = list(mix), list(mix.values())

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            t0 = time.perf_counter()
            try:
                status, answer = post(port, "POST", "/v1/sql", request_of(kind, rng))
            except (OSError, json.JSONDecodeError) as e:
                status, answer = 599, {"error": repr(e)}  # counted as a 5xx: no answer
            with lock:
                results.append((kind, status, time.perf_counter() - t0, answer))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(name: str, results: list[tuple], seconds: float) -> list[list]:
    rows = []
    by_kind: dict[str, list[tuple]] = defaultdict(list)
    for r in results:
        by_kind[r[0]].append(r)
    for kind, rs in [("all", results), *sorted(by_kind.items())]:
        lat = sorted(r[2] for r in rs)
        kinds = defaultdict(int)
        for r in rs:
            if r[1] == 200:
                kinds["truncated" if r[3].get("truncated") else r[3].get("error_kind") or "ok"] += 1
        rows.append([name, kind, len(rs), f"{len(rs) / seconds:.1f}",
                     f"{statistics.median(lat):.3f}", f"{percentile(lat, 95):.3f}",
                     f"{lat[-1]:.3f}", sum(400 <= r[1] < 500 for r in rs),
                     sum(r[1] >= 500 for r in rs),
                     ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))])
    return rows


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0, help="both phases together")
    parser.add_argument("--timeout", type=float, default=1.0, help="the server's --timeout")
    parser.add_argument("--adapter", type=Path, default=None,
                        help=f"default: {DEFAULT_ADAPTER} if trained, else the built-in model "
                             "trained for a few steps")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        adapter = args.adapter or (REPO / DEFAULT_ADAPTER)
        if not (adapter / ADAPTER_CONFIG).is_file():
            if args.adapter is not None:
                print(f"bench_serve: {adapter}: no {ADAPTER_CONFIG}", file=sys.stderr)
                return 2
            adapter = builtin_adapter(work)
        databases = work / "database"
        shutil.copytree(REPO / "data" / "sample" / "database", databases)
        before = sha256s(databases)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start(databases, adapter, port, args.timeout, work / "serve.log")
        try:
            post(port, "POST", "/v1/sql", request_of("question", random.Random(0)))  # warm up
            table, results = [], {}
            for name, mix in MIXES.items():
                results[name] = phase(port, mix, args.clients, args.seconds / 2)
                table += summary(name, results[name], args.seconds / 2)
            health = post(port, "GET", "/healthz", None)[1]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        after = sha256s(databases)
    print(f"text2sql serve on 127.0.0.1: {args.clients} clients, 2 phases x {args.seconds / 2:g} s, "
          f"--timeout {args.timeout:g} s; questions generated in batches of "
          f"{health['mean_batch_size']} on average ({health['recent_batches']} batches)")
    print(tabulate(table, headers=["phase", "kind", "requests", "req/s", "p50 s", "p95 s", "max s",
                                   "4xx", "5xx", "answers"], tablefmt="github"))

    def good_p95(name: str) -> float:
        return percentile(sorted(r[2] for r in results[name] if r[0] == "sql"), 95)

    mixed = results["mixed"]
    checks = {
        "zero 5xx": all(r[1] < 500 for rs in results.values() for r in rs),
        "runaway queries timed out": all(r[3].get("error_kind") == "timeout"
                                         for r in mixed if r[0] == "runaway"),
        "huge results truncated": all(r[3].get("truncated") for r in mixed if r[0] == "huge"),
        f"good SQL p95 mixed - clean = {good_p95('mixed') - good_p95('clean'):.3f} s "
        f"<= timeout {args.timeout:g} s": good_p95("mixed") - good_p95("clean") <= args.timeout,
        "databases' sha256 unchanged": before == after,
    }
    for what, ok in checks.items():
        print(f"{'OK  ' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
