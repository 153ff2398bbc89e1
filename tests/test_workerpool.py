"""The worker pool: a task that raises, kills or hangs its worker costs that task only."""

from __future__ import annotations

import os
import time

from text2sql.sql.workerpool import TaskFailed, run_tasks


def _task(x: int) -> int:
    if x == 3:
        os._exit(7)  # what a segfault inside SQLite looks like from outside
    if x == 5:
        raise ValueError("bad task")
    if x == 8:
        time.sleep(60)
    return x * x


def test_results_in_order_and_failures_pinned():
    seen = []
    results = run_tasks(_task, list(range(12)), workers=2, hard_timeout_s=1.0, chunk_size=4,
                        on_result=lambda i, r: seen.append(i))
    for i, r in enumerate(results):
        if i in (3, 5, 8):
            assert isinstance(r, TaskFailed)
        else:
            assert r == i * i
    assert results[3].reason == "died" and "exit code 7" in results[3].message
    assert results[5].reason == "exception" and "ValueError: bad task" in results[5].message
    assert results[8].reason == "hung"
    assert sorted(seen) == list(range(12))


def test_more_workers_than_tasks_and_empty():
    assert run_tasks(_task, [1, 2], workers=8) == [1, 4]
    assert run_tasks(_task, [], workers=2) == []


def _steps(x: int) -> str:
    from text2sql.sql.workerpool import heartbeat

    for step in range(3):
        heartbeat(f"step {step}")
        time.sleep(60 if (x, step) == (1, 2) else 0.4)
    return "done"


def test_heartbeats_make_the_limit_per_step_and_name_the_step():
    ok, hung = run_tasks(_steps, [0, 1], workers=2, hard_timeout_s=1.0)
    assert ok == "done"  # 1.2 s in all, but no step took 1 s
    assert isinstance(hung, TaskFailed) and hung.reason == "hung" and hung.step == "step 2"


def _allocate(n: int) -> int:
    return len(bytearray(n))


def test_a_worker_cannot_grow_past_its_memory_headroom():
    small, huge = run_tasks(_allocate, [2**20, 3 * 2**30], workers=1, memory_headroom=2**30)
    assert small == 2**20
    assert isinstance(huge, TaskFailed) and "MemoryError" in huge.message
