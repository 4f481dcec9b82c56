"""A signal during binlog replay ends both processes of the pipe at once.

``mariadb-binlog | mariadb`` runs in sessions of their own (a terminal's
Ctrl-C reaches only the drill), so the drill must stop them itself: before,
a SIGTERM mid-replay waited for a reader that nobody read from any more,
until the replay's own timeout (the rest of the drill's deadline).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from drills.backends.base import BackendSettings
from drills.clock import SystemClock
from drills.engines.mariadb.backend import LocalMariadb
from drills.engines.mariadb.replay import ReplayTracker, pipe
from drills.errors import Interrupted
from drills.machine import _signals_raise_interrupted


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigterm_mid_replay_kills_reader_and_client(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    backend = LocalMariadb(None, BackendSettings("t", tmp_path, SystemClock()))
    # a reader stuck mid-stream and a client waiting for more: each writes its pid first
    reader = ["sh", "-c", f"echo $$ > {pids}/reader; exec sleep 60"]
    client = ["sh", "-c", f"echo $$ > {pids}/client; exec cat >/dev/null"]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    stray = signal.signal(signal.SIGTERM, lambda *_: None)  # a late SIGTERM must not kill pytest
    try:
        with _signals_raise_interrupted():
            timer.start()
            started = time.monotonic()
            with pytest.raises(Interrupted):
                pipe(reader, client, ReplayTracker(["mysql-bin.000001"], 4), tmp_path, 120, run_as=backend.run_as)
            took = time.monotonic() - started
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
        signal.signal(signal.SIGTERM, stray)
    assert took < 3, f"the replay held the drill {took:.1f}s after SIGTERM"
    for name in ("reader", "client"):
        pid = int((pids / name).read_text())
        assert not alive(pid), f"the {name} outlived the interrupted replay"
