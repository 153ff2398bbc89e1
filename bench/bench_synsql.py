"""SynSQL-layout benchmark: throughput and peak memory of preparing a million examples.

    python bench/bench_synsql.py                         # 1,000,000 examples, 1 and 2 workers
    python bench/bench_synsql.py --examples 200000 --workers 1 2 4

Writes a file in OmniSQL's SynSQL-2.5M layout (``data.json``, ``tables.json``,
``databases/``) over the sample's four databases (``text2sql.data.sample``), then runs the
``prepare`` stage itself (``stages/prepare.py`` in a scratch folder, ``prepare.source:
synsql``, ``prepare.answer: reasoning``, gold SQL checked) once per worker count. For each
it prints the examples read per second (wall time, the three passes over the file
included: the held-out split's databases, the training split, the evaluation split), the
peak resident memory of the whole process tree (the stage and its workers, summed, sampled
every 0.2 s) and of its largest process, and checks the tree's peak against
:data:`MEMORY_BOUND_MB` plus :data:`WORKER_BOUND_MB` per worker (the bound docs/stages.md
states). Exits 1 when a run is over it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from tabulate import tabulate

from text2sql.data.sample import build_synsql_dataset

REPO = Path(__file__).resolve().parents[1]
MEMORY_BOUND_MB = 200  # the stage's own process, whatever the number of examples
WORKER_BOUND_MB = 150  # each worker process on top


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` and its descendants (summed, largest), from /proc."""
    sizes, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        sizes.append(rss / 1024)
    return sum(sizes), max(sizes, default=0.0)


def run_stage(data: Path, workers: int, scratch: Path) -> dict[str, float]:
    """Run ``stages/prepare.py`` on ``data`` in ``scratch``; wall time, counts, peak memory."""
    import json

    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "params.yaml").write_text(yaml.safe_dump({"prepare": {
        "source": "synsql", "path": str(data), "answer": "reasoning", "workers": workers}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "prepare.py")], cwd=scratch,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_total = peak_largest = 0.0
    while proc.poll() is None:
        total, largest = tree_rss_mb(proc.pid)
        peak_total, peak_largest = max(peak_total, total), max(peak_largest, largest)
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"bench_synsql: the prepare stage failed ({proc.returncode}):\n{err[-2000:]}")
    metrics = json.loads((scratch / "metrics" / "prepare.json").read_text())
    read = metrics["train_read"] + metrics["eval_read"]
    return {"workers": workers, "read": read, "kept": metrics["train_n"] + metrics["eval_n"],
            "seconds": seconds, "per_s": read / seconds, "tree_mb": peak_total,
            "largest_mb": peak_largest,
            "bound_mb": MEMORY_BOUND_MB + WORKER_BOUND_MB * (workers if workers > 1 else 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dir", type=Path, default=None,
                        help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-synsql-", dir=args.dir) as tmp:
        t0 = time.perf_counter()
        data = build_synsql_dataset(Path(tmp) / "SynSQL", args.examples)
        size = (data / "data.json").stat().st_size
        print(f"wrote {args.examples:,} examples ({size / 2**20:,.0f} MiB data.json) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        results = []
        for w in args.workers:
            results.append(run_stage(data, w, Path(tmp) / f"run-{w}"))
            r = results[-1]
            print(f"workers {w}: {r['per_s']:,.0f} examples/s, peak {r['tree_mb']:,.0f} MB",
                  file=sys.stderr)
    print(f"prepare.source synsql, answer reasoning: {args.examples:,} examples "
          f"({size / 2**20:,.0f} MiB), CPU cores {os.cpu_count()}")
    print(tabulate([[r["workers"], f"{r['read']:,}", f"{r['kept']:,}", f"{r['seconds']:,.0f}",
                     f"{r['per_s']:,.0f}", f"{r['tree_mb']:,.0f}", f"{r['largest_mb']:,.0f}",
                     f"{r['bound_mb']:,}"] for r in results],
                   headers=["workers", "read", "kept", "wall s", "examples/s", "peak RSS MB (all)",
                            "largest process MB", "bound MB"], tablefmt="github"))
    over = [r for r in results if r["tree_mb"] > r["bound_mb"]]
    for r in over:
        print(f"bench_synsql: {r['workers']} worker(s): peak {r['tree_mb']:,.0f} MB is over the "
              f"bound of {r['bound_mb']:,} MB", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
