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

A signal must stop the checks at once (systemd and Kubernetes follow SIGTERM
with SIGKILL, and a killed drill leaks its server). The checks therefore
always run on worker threads, never on the caller's: the caller waits on
futures, where the signal's exception lands; :func:`run_tasks` then cancels
every borrowed connection's statement on the server
(:func:`validators.connect.cancel_query`), drops the checks not yet started
and waits only a few seconds for the cancelled ones to return.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Generic, TypeVar

from validators.connect import cancel_query, connect
from validators.dbapi import Connection
from validators.endpoint import Endpoint
from validators.errors import ValidatorError

__all__ = ["ConnectionPool", "Outcome", "Task", "run_tasks"]

T = TypeVar("T")

CANCEL_GRACE_S = 5.0  # how long an interrupted run waits for cancelled checks to return


class ConnectionPool:
    def __init__(
        self, endpoint: Endpoint, *, timeout_s: int = 10, first: Connection | None = None, read_only: bool = True
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.read_only = read_only
        self._idle: list[Connection] = [first] if first is not None else []
        self._lock = threading.Lock()
        self._busy: dict[int, Connection] = {}  # borrowed right now, by id: what an interrupt cancels
        self._cancelled = False  # once set, nothing more is lent: a task that starts late must not run
        self.opened = 1 if first is not None else 0  # how many connections this pool ever opened

    @contextlib.contextmanager
    def connection(self, *, disposable: bool = False) -> Iterator[Connection]:
        """Borrow a connection (opening one if none is idle) for the duration of a block.

        ``disposable``: close it afterwards instead of giving it back.
        """
        with self._lock:
            if self._cancelled:
                raise ValidatorError("not run: the drill was interrupted")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.endpoint, timeout_s=self.timeout_s, read_only=self.read_only)
            with self._lock:
                self.opened += 1
        with self._lock:
            self._busy[id(conn)] = conn
            late = self._cancelled
        if late:  # interrupted while this connection was being opened
            with self._lock:
                self._busy.pop(id(conn), None)
            with contextlib.suppress(Exception):
                conn.close()
            raise ValidatorError("not run: the drill was interrupted")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        finally:
            with self._lock:
                self._busy.pop(id(conn), None)
        if disposable:
            with contextlib.suppress(Exception):
                conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def cancel_running(self) -> int:
        """Cancel the statement of every borrowed connection on the server; how many were asked."""
        with self._lock:
            self._cancelled = True
            busy = list(self._busy.values())
        for conn in busy:
            cancel_query(conn, self.endpoint)
        return len(busy)

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
    broken check never stops the others. An exception in the caller's thread
    while it waits (a signal) cancels the running statements, drops the tasks
    not started and is re-raised after at most :data:`CANCEL_GRACE_S`.
    """
    if not tasks:
        return []
    workers = max(1, min(workers, len(tasks)))
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validator")
    futures = [ex.submit(_timed, pool, t) for t in tasks]
    try:
        return [f.result() for f in futures]
    except BaseException:
        started = [f for f in futures if not f.cancel()]  # a cancelled future never counts as done in wait()
        pool.cancel_running()
        ex.shutdown(wait=False, cancel_futures=True)
        wait_futures(started, timeout=CANCEL_GRACE_S)
        raise
    finally:
        ex.shutdown(wait=False)
