"""Local MariaDB dump restores against real servers: plain and gzip dumps load, and say they loaded to
the end; a missing, corrupt or truncated dump is a BackupDefect (a failed drill, exit 1) naming what
is wrong, found before a server starts when it can be, and teardown leaves no process and no datadir."""

from __future__ import annotations

import contextlib
import gzip
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from maria_helpers import connect, requires_mariadb, scratch_dir, settings_for, step_ctx

from drills.demo.mariadb import _load_schema
from drills.engines.mariadb.backend import create
from drills.engines.mariadb.declaration import MariadbDumpSource
from drills.engines.mariadb.server import MariaServer, find_maria_binaries, run_as_for_mariadb
from drills.errors import BackupDefect
from drills.osutil import os_user, pids_using

pytestmark = [*requires_mariadb, pytest.mark.slow]


@pytest.fixture(scope="module")
def dumps() -> Iterator[dict[str, Path]]:
    """A source server's shop database dumped four ways, plus damaged copies; the source is stopped."""
    with scratch_dir() as base:
        bins = find_maria_binaries(need=("dump",))
        src = MariaServer(bins, base / "source", run_as_for_mariadb())
        src.install_db()
        src.start()
        try:
            src.wait_accepting(60)
            with contextlib.closing(src.connect()) as conn:
                _load_schema(conn, random.Random(7))
            common = [bins.tool("dump"), "--no-defaults", f"--socket={src.socket}", f"--user={os_user()}"]
            common += ["--single-transaction", "--routines"]
            out: dict[str, Path] = {}
            with (base / "with-db.sql").open("wb") as fh:
                subprocess.run([*common, "--databases", "shop"], stdout=fh, check=True)
            out["with_db"] = base / "with-db.sql"
            with (base / "no-db.sql").open("wb") as fh:
                subprocess.run([*common, "shop"], stdout=fh, check=True)
        finally:
            assert src.stop()
        raw = out["with_db"].read_bytes()
        out["no_db_gz"] = base / "no-db.sql.gz"
        out["no_db_gz"].write_bytes(gzip.compress((base / "no-db.sql").read_bytes()))
        out["truncated"] = base / "truncated.sql"
        out["truncated"].write_bytes(raw[: int(len(raw) * 0.6)])
        cut = raw.rfind(b";\n", 0, int(len(raw) * 0.95)) + 2  # a clean statement boundary, trailer lost
        out["truncated_clean"] = base / "truncated-clean.sql"
        out["truncated_clean"].write_bytes(raw[:cut])
        mid = raw.find(b"INSERT INTO `orders`")
        out["corrupt"] = base / "corrupt.sql"
        out["corrupt"].write_bytes(raw[:mid] + b"INSERT INTO `orders` VALUES (this is not sql\n" + raw[mid:])
        gz = gzip.compress(raw)
        out["truncated_gz"] = base / "truncated.sql.gz"
        out["truncated_gz"].write_bytes(gz[: len(gz) // 2])
        yield out


@pytest.mark.parametrize(("name", "database"), [("with_db", "shop"), ("no_db_gz", "restored")])
def test_dump_restores(dumps: dict[str, Path], name: str, database: str) -> None:
    with scratch_dir() as run_dir:
        ctx, reg = step_ctx()
        backend = create(MariadbDumpSource(kind="mariadb-dump", dump=dumps[name]), settings_for(run_dir))
        report = backend.preflight(ctx)
        assert report.recovery_point["compressed"] == ("gzip" if name.endswith("gz") else None)
        try:
            restored = backend.restore(report.plan, ctx)
            ready = backend.await_ready(restored, ctx)
            ep = backend.endpoint(ready, ctx)
            assert ep.database == database  # the dump's own USE wins over the default
            with connect(ep) as conn, conn.cursor() as cur:
                cur.execute("select count(*) from customers")
                assert cur.fetchone()[0] == 400
                cur.execute("select count(*) from orders")
                assert cur.fetchone()[0] == 1500
                cur.execute("select count(*) from order_items")
                assert cur.fetchone()[0] == 3000
                with pytest.raises(Exception, match="denied"):
                    cur.execute("delete from orders")  # the drill user is read-only
            assert all(f.passed for f in backend.verify_isolation(ready, ctx))
            proof = backend.recovery_proof()
            assert proof is not None and proof["complete"] is True, proof
            assert proof["reached"]["last_line"].startswith("-- Dump completed")
        finally:
            results = [backend.teardown(r, ctx) for r in reversed(reg)]
        assert all(r.deleted for r in results)
        assert not pids_using(run_dir) and not (run_dir / "mariadb").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("truncated", r"the dump is truncated: it has no '-- Dump completed' trailer"),
        ("truncated_clean", r"the dump is truncated: it has no '-- Dump completed' trailer"),
    ],
)
def test_a_truncated_dump_is_a_backup_defect_before_anything_starts(
    dumps: dict[str, Path], name: str, message: str
) -> None:
    with scratch_dir() as run_dir:
        ctx, reg = step_ctx()
        backend = create(MariadbDumpSource(kind="mariadb-dump", dump=dumps[name]), settings_for(run_dir))
        with pytest.raises(BackupDefect, match=rf"{dumps[name]}: {message}"):
            backend.preflight(ctx)
        assert reg == [] and not (run_dir / "mariadb").exists()


def test_a_missing_dump_is_a_backup_defect(dumps: dict[str, Path]) -> None:
    gone = dumps["with_db"].with_name("2026-11-30.sql.gz")
    ctx, reg = step_ctx()
    backend = create(MariadbDumpSource(kind="mariadb-dump", dump=gone), settings_for(gone.parent / "run"))
    with pytest.raises(BackupDefect, match=rf"no dump at {gone} \(did last night's backup run\?"):
        backend.preflight(ctx)
    assert reg == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("corrupt", r"the mariadb client failed at dump line \d+: ERROR 1064"),
        ("truncated_gz", r"cannot read .*truncated\.sql\.gz after line \d+"),
    ],
)
def test_a_damaged_dump_fails_while_loading_and_teardown_removes_everything(
    dumps: dict[str, Path], name: str, message: str
) -> None:
    with scratch_dir() as run_dir:
        ctx, reg = step_ctx()
        backend = create(MariadbDumpSource(kind="mariadb-dump", dump=dumps[name]), settings_for(run_dir))
        report = backend.preflight(ctx)
        try:
            restored = backend.restore(report.plan, ctx)
            with pytest.raises(BackupDefect, match=rf"loading the dump {dumps[name]} failed: {message}"):
                backend.await_ready(restored, ctx)
            proof = backend.recovery_proof()
            assert proof is not None and proof["complete"] is False
            assert proof["reached"]["lines_streamed"] > 0
        finally:
            results = [backend.teardown(r, ctx) for r in reversed(reg)]
        assert reg and all(r.deleted for r in results)
        assert not pids_using(run_dir)
        assert not Path(reg[0].id).exists() and not (run_dir / "mariadb").exists()


def test_loopback_listener_when_asked(dumps: dict[str, Path]) -> None:
    """``mariadb_listen: loopback`` binds 127.0.0.1 on a free port; the drill user works over TCP."""
    import pymysql

    with scratch_dir() as run_dir:
        ctx, reg = step_ctx()
        src = MariadbDumpSource(kind="mariadb-dump", dump=dumps["with_db"])
        backend = create(src, settings_for(run_dir, mariadb_listen="loopback"))
        report = backend.preflight(ctx)
        try:
            restored = backend.restore(report.plan, ctx)
            ready = backend.await_ready(restored, ctx)
            ep = backend.endpoint(ready, ctx)
            assert ep.port > 0
            facts = {f.check: f for f in backend.verify_isolation(ready, ctx)}
            assert facts["listen"].value["bind_address"] == "127.0.0.1"
            assert ep.password is not None
            with (
                pymysql.connect(
                    host="127.0.0.1", port=ep.port, user=ep.user, password=ep.password.reveal(), database=ep.database
                ) as conn,
                conn.cursor() as cur,
            ):
                cur.execute("select count(*) from orders")
                assert cur.fetchone()[0] == 1500
        finally:
            assert all(backend.teardown(r, ctx).deleted for r in reversed(reg))
