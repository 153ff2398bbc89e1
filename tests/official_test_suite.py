"""The official test-suite verdicts for (gold, pred, db_id) pairs: taoyds/test-suite-sql-eval
``exec_eval.eval_exec_match`` on each pair's ``database/<db_id>/<db_id>.sqlite`` (which runs
the pair on every ``.sqlite`` file of that folder), as ``evaluation.py --etype exec`` calls it.

    python tests/official_test_suite.py OFFICIAL_DIR SUITE_DIR pairs.jsonl out.jsonl \
        [--plug-value] [--keep-distinct]

OFFICIAL_DIR is a checkout of test-suite-sql-eval (not part of this repository); run it with
a Python that has sqlparse. ``official`` is 1, 0, or ``gold_error`` where the official code
stops on a gold query that fails (its assert, exec_eval.py line 228). The seconds spent in
``eval_exec_match`` go to stderr as ``official seconds: S`` (for bench/bench_test_suite.py).
"""

from __future__ import annotations

import json
import sys
import time


def main(official_dir: str, suite_dir: str, pairs: str, out_path: str, *flags: str) -> None:
    sys.path.insert(0, official_dir)
    import exec_eval

    plug_value, keep_distinct = "--plug-value" in flags, "--keep-distinct" in flags
    seconds = 0.0
    with open(pairs) as f, open(out_path, "w") as out:
        for line in f:
            r = json.loads(line)
            db = f"{suite_dir}/database/{r['db_id']}/{r['db_id']}.sqlite"
            start = time.perf_counter()
            try:
                verdict: int | str = exec_eval.eval_exec_match(
                    db, r["pred"], r["gold"], plug_value, keep_distinct, False)
            except AssertionError:
                verdict = "gold_error"
            seconds += time.perf_counter() - start
            out.write(json.dumps({**r, "official": verdict}) + "\n")
    print(f"official seconds: {seconds:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
