"""A pool of worker processes in which a dead worker fails only the task it was running.

``concurrent.futures.ProcessPoolExecutor`` treats any worker's death as the pool's: every
pending task fails with ``BrokenProcessPool`` and the survivors are terminated, so one sample
killed by the out-of-memory killer would abort a whole ingest. Here each worker has its own
pipe: the parent hands a task to an idle worker, waits on every pipe and every process's
sentinel at once, and when a worker dies it records that worker's task as lost, starts a
replacement (if tasks remain) and goes on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass(frozen=True)
class WorkerLost:
    """A task whose worker process died while running it."""

    exitcode: int | None

    @property
    def reason(self) -> str:
        if self.exitcode is not None and self.exitcode < 0:
            name = signal.Signals(-self.exitcode).name
            cause = " (killed, e.g. by the out-of-memory killer)" if name == "SIGKILL" else ""
            return f"worker process killed by {name}{cause}"
        return f"worker process exited unexpectedly (exit code {self.exitcode})"


@dataclass(frozen=True)
class TaskError:
    """A task that raised: the exception's type and message (the worker stays up)."""

    type_name: str
    message: str


class WorkerPool:
    """``n`` spawned processes that run ``initializer()`` once, then ``function(task)`` per task.

    Workers start (and initialize) as soon as the pool is made, so their imports overlap with
    whatever the caller does before :meth:`run`.
    """

    def __init__(self, n: int, function: Callable[[Any], Any], initializer: Callable[[], Any]):
        # spawn, not fork: the parent holds Dagster's threads and SQLite connections.
        self._context = multiprocessing.get_context("spawn")
        self._function, self._initializer = function, initializer
        self._workers = [self._start() for _ in range(n)]

    def _start(self) -> tuple[Any, Connection]:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(child, self._initializer, self._function), daemon=True
        )
        process.start()
        child.close()
        return process, parent

    def run(self, tasks: Iterable[Hashable]) -> dict[Hashable, Any]:
        """Run every task; task -> its result, a :class:`TaskError` or a :class:`WorkerLost`.

        Tasks are handed out in order, one at a time per worker.
        """
        pending = list(tasks)[::-1]
        results: dict[Hashable, Any] = {}
        busy: dict[int, Hashable] = {}  # worker index -> its task
        for index in range(len(self._workers)):
            if pending:
                self._hand(index, pending.pop(), busy)
        while busy:
            waiting = {}
            for index in busy:
                process, connection = self._workers[index]
                waiting[connection] = index
                waiting[process.sentinel] = index
            for ready in wait(list(waiting)):
                index = waiting[ready]
                if index not in busy:
                    continue  # both its pipe and its sentinel were ready: handled
                process, connection = self._workers[index]
                task = busy.pop(index)
                try:
                    results[task] = connection.recv()
                except (EOFError, OSError):  # the worker died mid-task
                    process.join()
                    results[task] = WorkerLost(process.exitcode)
                    connection.close()
                    if not pending:
                        continue
                    self._workers[index] = self._start()
                if pending:
                    self._hand(index, pending.pop(), busy)
        return results

    def _hand(self, index: int, task: Hashable, busy: dict[int, Hashable]) -> None:
        try:
            self._workers[index][1].send(task)
        except OSError:  # the worker died while idle: replace it
            self._workers[index][1].close()
            self._workers[index] = self._start()
            self._workers[index][1].send(task)
        busy[index] = task

    def close(self) -> None:
        """Tell the workers to exit; they do once their current task (if any) is done."""
        for process, connection in self._workers:
            if process.is_alive():
                with contextlib.suppress(OSError):  # it died since: nothing to tell
                    connection.send(None)
            connection.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _serve(connection: Connection, initializer: Callable[[], Any], function: Callable) -> None:
    initializer()
    while (task := connection.recv()) is not None:
        try:
            result = function(task)
        except Exception as error:  # noqa: BLE001 - reported to the parent, the worker goes on
            result = TaskError(type(error).__name__, str(error))
        connection.send(result)
