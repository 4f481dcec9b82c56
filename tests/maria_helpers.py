"""Helpers for the local MariaDB backend tests: skip marker, step contexts, a traversable scratch dir.

The tests drive the backend directly (preflight → restore → await_ready →
endpoint → teardown) against real ``mariadbd`` processes; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import structlog

from drills.backends.base import BackendSettings, StepContext
from drills.clock import Clock, SystemClock
from drills.errors import PreflightError
from drills.localmaria import find_maria_binaries, pids_using
from drills.resources import Resource
from validators.endpoint import Endpoint

__all__ = [
    "Registry",
    "connect",
    "maria_missing",
    "requires_mariadb",
    "scratch_dir",
    "settings_for",
    "step_ctx",
]


def maria_missing() -> str | None:
    """Why MariaDB tests cannot run here, or None."""
    try:
        find_maria_binaries(need=("backup", "binlog", "dump"))
    except PreflightError as exc:
        return str(exc)
    return None


_MISSING = maria_missing()
requires_mariadb = [
    pytest.mark.mariadb,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]


class Registry(list[Resource]):
    """What the backend registered, in order (the journal of these tests).

    Like the drill's own register: the same resource registered again with
    more attributes (the server's pid once it runs) replaces the first record.
    """

    def register(self, resource: Resource) -> None:
        for i, r in enumerate(self):
            if (r.backend, r.kind, r.id) == (resource.backend, resource.kind, resource.id):
                self[i] = resource
                return
        self.append(resource)


def step_ctx(clock: Clock | None = None, seconds: float = 300) -> tuple[StepContext, Registry]:
    clk = clock or SystemClock()
    reg = Registry()
    ctx = StepContext(
        clock=clk,
        deadline_ns=clk.monotonic_ns() + int(seconds * 1e9),
        log=structlog.get_logger("test"),
        register=reg.register,
    )
    return ctx, reg


def settings_for(run_dir: Path, run_id: str = "test-run", **extra: Any) -> BackendSettings:
    return BackendSettings(run_id=run_id, run_dir=run_dir, clock=SystemClock(), extra=dict(extra))


@contextlib.contextmanager
def scratch_dir(prefix: str = "rd-maria-") -> Iterator[Path]:
    """A 0755 directory under /var/tmp (the server's user must traverse it; pytest's tmp is 0700)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        leftover = pids_using(base)
        shutil.rmtree(base, ignore_errors=True)
        assert not leftover, f"processes left running under {base}: {leftover}"


def connect(ep: Endpoint) -> Any:
    """A pymysql connection to a backend's endpoint, as a validator would open it."""
    return pymysql.connect(
        unix_socket=ep.unix_socket,
        user=ep.user,
        password=ep.password.reveal() if ep.password else "",
        database=ep.database,
        autocommit=True,
    )
