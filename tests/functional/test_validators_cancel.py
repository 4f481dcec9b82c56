"""A signal while checks run cancels their statements on the server, at once.

systemd and Kubernetes send SIGKILL a few seconds after SIGTERM; a drill that
waits for a 60 s query to end is killed with its server still up. These
tests run slow checks on the real servers, deliver SIGTERM to this process
the way the machine receives it, and look at the server's own session list
to see that the statements are gone, not merely abandoned by the client.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from servers import MariaDbServer, PgServer

from drills.errors import Interrupted
from drills.machine import _signals_raise_interrupted
from validators.connect import connect
from validators.dbapi import Connection, fetch_all, fetch_one
from validators.endpoint import Endpoint
from validators.pool import ConnectionPool, Task, run_tasks

SLEEP = {"postgres": "select pg_sleep(60)", "mysql": "select sleep(60)"}
# the server's view of its sessions: sleeping statements, whoever the client thinks it is
RUNNING = {
    "postgres": "select count(*) from pg_stat_activity where state = 'active' and query like 'select pg_sleep(60)%%'",
    "mysql": "select count(*) from information_schema.processlist where info like 'select sleep(60)%%'",
}


def sleeping(ep: Endpoint) -> int:
    conn = connect(ep, read_only=True)
    try:
        row = fetch_one(conn, RUNNING[ep.engine])
        return int(row[0]) if row else 0
    finally:
        conn.close()


@pytest.fixture
def sigterm_in() -> Iterator[threading.Timer]:
    """A timer that sends SIGTERM to this process; the test starts it."""
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    # a SIGTERM that outlives the test's own handler (the test failed early, under load) must not kill pytest
    stray = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield timer
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
        signal.signal(signal.SIGTERM, stray)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_cancels_running_checks_on_the_server(
    shop_reader: tuple[PgServer | MariaDbServer, Endpoint, Endpoint], sigterm_in: threading.Timer, workers: int
) -> None:
    _server, _admin, reader = shop_reader
    sql = SLEEP[reader.engine]

    def slow(conn: Connection) -> list[tuple[object, ...]]:
        return fetch_all(conn, sql)

    tasks = [Task(f"slow {i}", slow, disposable=True) for i in range(3)]  # one more than the workers
    with ConnectionPool(reader, read_only=True) as pool, _signals_raise_interrupted():
        sigterm_in.start()
        started = time.monotonic()
        with pytest.raises(Interrupted, match="SIGTERM"):
            run_tasks(pool, tasks, workers)
        returned_after = time.monotonic() - started
    assert returned_after < 6, f"run_tasks returned {returned_after:.1f}s after it started, 1s after SIGTERM"
    assert pool.opened == workers  # the third check never started
    deadline = time.monotonic() + 3
    while sleeping(reader) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleeping(reader) == 0, "a cancelled check's statement still runs on the server"


def test_a_pool_cancelled_lends_no_more_connections(
    shop_reader: tuple[PgServer | MariaDbServer, Endpoint, Endpoint],
) -> None:
    _server, _admin, reader = shop_reader
    with ConnectionPool(reader, read_only=True) as pool:
        assert pool.cancel_running() == 0
        with pytest.raises(Exception, match="interrupted"), pool.connection():
            pass
        assert pool.opened == 0
