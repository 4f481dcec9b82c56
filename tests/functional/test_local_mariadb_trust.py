"""Local MariaDB: logs stay 0600 under umask 000, and teardown signals only what it can prove is the run's.

Real ``mariadbd`` processes; the resource records are built the way the
backend journals them (and then forged).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from maria_helpers import requires_mariadb, scratch_dir, step_ctx

from drills.engines.mariadb.server import MariaServer, find_maria_binaries, run_as_for_mariadb
from drills.engines.mariadb.teardown import OWNER_FILE, teardown_server
from drills.osutil import ProcessIdentity, identity_of, open_private_log, pids_using
from drills.resources import Resource

pytestmark = requires_mariadb

RUN_ID = "20260101T000000Z-abcdef"


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def record(root: Path, ident: ProcessIdentity | None) -> Resource:
    run_as = run_as_for_mariadb()
    attrs: dict[str, Any] = {
        "run_id": RUN_ID,
        "run_dir": str(root),
        "datadir": str(root / "data"),
        "run_as": run_as.name if run_as else None,
        "mariadbd": "/nonexistent/evil-mariadbd",  # never executed
    }
    if ident is not None:
        attrs |= ident.to_attrs()
    return Resource("mariadb-server", str(root / "data"), "local-mariadb", attrs)


def _as_server_user() -> dict[str, Any]:
    run_as = run_as_for_mariadb()
    return {} if run_as is None else {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


@pytest.fixture
def strangers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_under_umask_000_server_logs_are_0600_and_teardown_stops_the_journaled_server() -> None:
    with scratch_dir() as base:
        root = base / "mariadb"
        root.mkdir()
        (root / OWNER_FILE).write_text(RUN_ID + "\n")
        started: list[ProcessIdentity] = []
        server = MariaServer(find_maria_binaries(), root, run_as_for_mariadb(), on_started=started.append)
        old = os.umask(0)
        try:
            server.install_db()
            server.start()
            server.wait_accepting(60)
            replay = open_private_log(server.log_dir / "replay.err")
            replay.close()
        finally:
            os.umask(old)
        assert [i.pid for i in started] == [server.pid()]
        for log in ("mariadbd.stderr", "mariadbd.err", "replay.err"):
            assert mode(server.log_dir / log) == 0o600, log
        assert (server.log_dir / "mariadbd.err").stat().st_size > 0  # the server logs into the file we made
        server._proc = None  # as after a crash: teardown has only the record
        ctx, _ = step_ctx()
        result = teardown_server(record(root, started[0]), ctx)
        assert result.deleted, result
        assert f"server (pid {started[0].pid}) stopped" in result.detail
        assert not root.exists() and not pids_using(root)


def test_teardown_signals_no_stranger_a_forged_record_names(strangers: list[subprocess.Popen[bytes]]) -> None:
    with scratch_dir() as base:
        root = base / "mariadb"
        (root / "data").mkdir(parents=True)
        (root / OWNER_FILE).write_text(RUN_ID + "\n")
        # the record carries the stranger's real identity; it runs as the server user, but not on our datadir
        stranger = subprocess.Popen(["sleep", "300"], start_new_session=True, **_as_server_user())
        strangers.append(stranger)
        time.sleep(0.05)
        ident = identity_of(stranger.pid)
        assert ident is not None
        (root / "sock").mkdir()
        (root / "sock" / "mariadbd.pid").write_text(f"{stranger.pid}\n")
        ctx, _ = step_ctx()
        result = teardown_server(record(root, ident), ctx)
        assert stranger.poll() is None
        assert result.deleted and f"pid {stranger.pid} not signalled" in result.detail


def test_a_process_older_than_the_run_directory_is_not_killed_and_keeps_it(
    strangers: list[subprocess.Popen[bytes]],
) -> None:
    with scratch_dir() as base:
        root = base / "mariadb"
        (root / "data").mkdir(parents=True)
        # names a path inside the run's directory, runs as the server user, has no journaled start
        older = subprocess.Popen(
            ["/bin/sh", "-c", "sleep 300; true", str(root / "work")], start_new_session=True, **_as_server_user()
        )
        strangers.append(older)
        time.sleep(0.05)
        owner = root / OWNER_FILE
        owner.write_text(RUN_ID + "\n")
        later = time.time() + 60  # the run laid its directory out a minute after that process started
        os.utime(owner, (later, later))
        ctx, _ = step_ctx()
        result = teardown_server(record(root, None), ctx)
        assert older.poll() is None
        assert not result.deleted and root.exists()
        assert "started before this run laid out its directory" in result.detail
        os.killpg(older.pid, signal.SIGKILL)  # ours to stop, before the scratch dir checks for leftovers
        older.wait()
