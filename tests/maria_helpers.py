"""Helpers for the local MariaDB backend tests: skip marker, step contexts, a traversable scratch dir,
and a source with five binlog files to damage (:func:`build_binlog_corpus`).

The tests drive the backend directly (preflight → restore → await_ready →
endpoint → teardown) or the whole runner, against real ``mariadbd`` processes;
nothing is mocked.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql
import pytest
import structlog

from drills.backends.base import BackendSettings, StepContext
from drills.clock import Clock, SystemClock
from drills.engines.mariadb.server import MariaServer, find_maria_binaries, run_as_for_mariadb
from drills.errors import PreflightError
from drills.osutil import chown_tree, os_user, pids_using, private_dir
from drills.resources import Resource
from validators.endpoint import Endpoint

__all__ = [
    "BinlogCorpus",
    "Registry",
    "binlog_events",
    "build_binlog_corpus",
    "connect",
    "copy_binlogs",
    "fix_crc",
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


# ---------------------------------------------------------------- a source with five binlogs


@dataclass(frozen=True)
class BinlogCorpus:
    """A stopped source: a full backup taken in mysql-bin.000001, then activity over five binlog files.

    ``target`` is a whole second inside mysql-bin.000003's activity with no transaction within
    100 ms of it; the counts come from the source itself (``created_at < target``).
    """

    root: Path
    backup: Path
    binlogs: Path
    files: tuple[str, ...]
    target: datetime
    rows_before_target: int
    rows_total: int
    key: Path


SCHEMA = (
    "create table orders (id int unsigned primary key auto_increment, file tinyint not null, "
    "note varchar(120) not null, created_at datetime(6) not null default current_timestamp(6)) engine=InnoDB"
)


def _orders(conn: Any, file: int, n: int, gap: float = 0.06) -> None:
    with conn.cursor() as cur:
        for i in range(n):
            conn.begin()
            cur.execute("insert into orders (file, note) values (%s, %s)", (file, f"order {i} of file {file} " * 3))
            conn.commit()
            time.sleep(gap)


def build_binlog_corpus(root: Path) -> BinlogCorpus:
    bins = find_maria_binaries(need=("backup", "binlog"))
    run_as = run_as_for_mariadb()
    server = MariaServer(bins, root / "source", run_as)
    binlogs = private_dir(root / "source" / "binlogs", run_as)
    backup = root / "backup"
    server.install_db()
    server.start([f"--log-bin={binlogs / 'mysql-bin'}", "--server-id=1", "--binlog-format=ROW", "--sync-binlog=0"])
    try:
        server.wait_accepting(60)
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("create database corpus")
            cur.execute("use corpus")
            cur.execute(SCHEMA)
            cur.executemany("insert into orders (file, note) values (0, %s)", [(f"seed {i}",) for i in range(200)])
        subprocess.run(
            [bins.tool("backup"), "--no-defaults", "--backup", f"--socket={server.socket}", f"--user={os_user()}",
             f"--target-dir={backup}"],
            capture_output=True, check=True, timeout=300, cwd="/",
        )  # fmt: skip
        with contextlib.closing(server.connect(database="corpus")) as conn:
            conn.autocommit(False)
            time.sleep(1.1)  # the backup's end_time is whole seconds: keep the activity clear of it
            for file in range(1, 6):
                _orders(conn, file, 8)
                if file == 3:
                    target_s = math.ceil(time.time()) + 1  # no transaction within 100 ms of it
                    time.sleep(target_s + 0.15 - time.time())
                    _orders(conn, file, 8)
                if file < 5:
                    with conn.cursor() as cur:
                        cur.execute("flush binary logs")
            conn.autocommit(True)
            target = datetime.fromtimestamp(target_s, UTC)
            with conn.cursor() as cur:
                cur.execute("select count(*) from orders where created_at < %s", (target.replace(tzinfo=None),))
                before = int(cur.fetchone()[0])
                cur.execute("select count(*) from orders")
                total = int(cur.fetchone()[0])
    finally:
        assert server.stop()
    for d in ("data", "sock", "tmp"):
        shutil.rmtree(root / "source" / d, ignore_errors=True)
    from drills.evidence.keys import generate_keypair

    key = root / "keys" / "drill.key"
    key.parent.mkdir()
    generate_keypair(key)
    files = tuple(sorted(p.name for p in binlogs.glob("mysql-bin.0*")))
    assert len(files) == 5, files
    return BinlogCorpus(root, backup, binlogs, files, target, before, total, key)


def copy_binlogs(corpus: BinlogCorpus, to: Path) -> Path:
    """A copy of the corpus binlogs owned, like the originals, by the server's user (who reads them)."""
    shutil.copytree(corpus.binlogs, to)
    chown_tree(to, run_as_for_mariadb())
    return to


_HEADER = struct.Struct("<IBIIIH")


def binlog_events(data: bytes) -> list[tuple[int, int, int]]:
    """(position, length, type) of every event in a binlog's bytes, by their headers; the test's own walk."""
    out, pos = [], 4
    while pos + 19 <= len(data):
        _ts, kind, _sid, length, _end, _flags = _HEADER.unpack_from(data, pos)
        out.append((pos, length, kind))
        pos += length
    return out


def fix_crc(data: bytearray, pos: int, length: int) -> None:
    """Recompute the CRC32 of the event at ``pos`` after the test changed its bytes (valid, wrong content)."""
    struct.pack_into("<I", data, pos + length - 4, zlib.crc32(bytes(data[pos : pos + length - 4])))
