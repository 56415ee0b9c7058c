"""A worker killed mid-task fails only its task; the pool replaces it and finishes the rest."""

from __future__ import annotations

import os
import signal
import time

from sc_assets.worker_pool import TaskError, WorkerLost, WorkerPool


def _work(task: str) -> str:
    if task == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if task == "raise":
        raise ValueError("a bad task")
    time.sleep(0.05)
    return task.upper()


def _ready() -> None:
    pass


def test_a_killed_worker_fails_only_its_task():
    tasks = ["a", "b", "kill", "c", "raise", "d", "e"]
    with WorkerPool(2, _work, _ready) as pool:
        results = pool.run(tasks)
    assert {t: r for t, r in results.items() if isinstance(r, str)} == {
        t: t.upper() for t in "abcde"
    }
    assert results["kill"] == WorkerLost(-signal.SIGKILL)
    assert results["kill"].reason == (
        "worker process killed by SIGKILL (killed, e.g. by the out-of-memory killer)"
    )
    assert results["raise"] == TaskError("ValueError", "a bad task")


def test_a_worker_that_died_while_idle_is_replaced():
    with WorkerPool(1, _work, _ready) as pool:
        assert pool.run(["a"]) == {"a": "A"}
        process, _ = pool._workers[0]
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert pool.run(["b", "c"]) == {"b": "B", "c": "C"}


def test_the_last_task_lost_leaves_no_worker_behind():
    with WorkerPool(2, _work, _ready) as pool:
        results = pool.run(["kill"])
        assert isinstance(results["kill"], WorkerLost)
    time.sleep(0.5)
    assert all(not p.is_alive() for p, _ in pool._workers)
