"""A small pool of connections for checks that run in parallel.

The runner runs every check as a task on a thread pool of
``parallelism`` workers; a task borrows one connection for its whole run and
gives it back. Because no more tasks run at once than there are workers, no
more than ``parallelism`` connections are ever open against the restored
server, whatever the mix of schema, count, smoke and freshness checks.
Connections are opened lazily (a run with two checks opens at most two), and
one that saw an error is closed rather than reused, so a killed session
cannot poison the checks after it.

Connections are READ ONLY sessions (:func:`validators.connect.connect`). A
task marked ``disposable`` (runbook-written SQL) gets its connection closed
afterwards whatever happened: a query may change a session default (such as
``default_transaction_read_only``) and must not hand that session to the
next check.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from validators.connect import connect
from validators.dbapi import Connection
from validators.endpoint import Endpoint

__all__ = ["ConnectionPool", "Outcome", "Task", "run_tasks"]

T = TypeVar("T")


class ConnectionPool:
    def __init__(
        self, endpoint: Endpoint, *, timeout_s: int = 10, first: Connection | None = None, read_only: bool = True
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.read_only = read_only
        self._idle: list[Connection] = [first] if first is not None else []
        self._lock = threading.Lock()
        self.opened = 1 if first is not None else 0  # how many connections this pool ever opened

    @contextlib.contextmanager
    def connection(self, *, disposable: bool = False) -> Iterator[Connection]:
        """Borrow a connection (opening one if none is idle) for the duration of a block.

        ``disposable``: close it afterwards instead of giving it back.
        """
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.endpoint, timeout_s=self.timeout_s, read_only=self.read_only)
            with self._lock:
                self.opened += 1
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        if disposable:
            with contextlib.suppress(Exception):
                conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Task(Generic[T]):
    """A unit of work that needs one connection: a check, a count, a catalog capture."""

    name: str
    fn: Callable[[Connection], T]
    disposable: bool = False  # runs SQL we did not write: its connection is closed afterwards


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a task returned or raised, and how long it ran on its connection."""

    task: Task[T]
    value: T | None
    error: BaseException | None
    duration_ms: int


def _timed(pool: ConnectionPool, task: Task[T]) -> Outcome[T]:
    started = time.monotonic_ns()
    try:
        with pool.connection(disposable=task.disposable) as conn:
            t0 = time.monotonic_ns()  # the check's own time, not the connection setup
            value = task.fn(conn)
            return Outcome(task, value, None, (time.monotonic_ns() - t0) // 1_000_000)
    except Exception as exc:
        return Outcome(task, None, exc, (time.monotonic_ns() - started) // 1_000_000)


def run_tasks(pool: ConnectionPool, tasks: Sequence[Task[T]], workers: int) -> list[Outcome[T]]:
    """Run ``tasks`` on ``workers`` threads (one borrowed connection each); outcomes in task order.

    A task that raises becomes an :class:`Outcome` with ``error`` set: one
    broken check never stops the others.
    """
    if not tasks:
        return []
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        return [_timed(pool, t) for t in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validator") as ex:
        return list(ex.map(lambda t: _timed(pool, t), tasks))
