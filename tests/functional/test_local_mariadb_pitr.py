"""Local MariaDB PITR against real servers: lands on the target and proves it, fails (BackupDefect)
what the backup cannot reach, and tears down from the journaled record even after the runner was
SIGKILLed. The corruption corpus is in test_local_mariadb_corpus.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from maria_helpers import connect, requires_mariadb, scratch_dir, settings_for, step_ctx

from drills.clock import SystemClock
from drills.demo.mariadb import DemoSource, build_demo_source
from drills.engines.mariadb.backend import create
from drills.engines.mariadb.declaration import MariadbPitrSource
from drills.engines.mariadb.server import run_as_for_mariadb
from drills.errors import BackupDefect
from drills.osutil import chown_tree, pids_using
from drills.resources import Resource

pytestmark = [*requires_mariadb, pytest.mark.slow]


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with scratch_dir() as d:
        yield d


@pytest.fixture(scope="module")
def demo(base: Path) -> DemoSource:
    return build_demo_source(base / "demo", SystemClock())


def _source(demo: DemoSource, **changes: object) -> MariadbPitrSource:
    data: dict[str, object] = {
        "kind": "mariadb-pitr",
        "backup": demo.backup,
        "binlogs": demo.binlogs,
        "target_time": demo.target_time,
        "database": "shop",
    }
    data.update(changes)
    return MariadbPitrSource.model_validate(data)


def test_pitr_lands_exactly_on_the_target(demo: DemoSource, base: Path) -> None:
    ctx, reg = step_ctx()
    backend = create(_source(demo), settings_for(base / "run-target", "run-target"))
    report = backend.preflight(ctx)
    assert reg == []  # preflight creates nothing
    rp = report.recovery_point
    assert rp["backup"]["binlog_file"] == "mysql-bin.000001"
    assert [b["file"] for b in rp["binlogs"]] == ["mysql-bin.000001", "mysql-bin.000002"]
    sizes = {p.name: p.stat().st_size for p in demo.binlogs.glob("mysql-bin.0*")}
    assert all(b["size_bytes"] == sizes[b["file"]] and b["defect"] is None for b in rp["binlogs"])
    assert rp["effective_stop"] == rp["target_time"]
    assert rp["requested"]["file"] == "mysql-bin.000002"  # the demo flushes the binlog before the target
    assert rp["requested"]["event_time"] == demo.target_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert rp["binlog_chain"]["defects_not_needed"] == []

    restored = backend.restore(report.plan, ctx)
    assert len(reg) == 1 and reg[0].kind == "mariadb-server" and reg[0].backend == "local-mariadb"
    ready = backend.await_ready(restored, ctx)
    ep = backend.endpoint(ready, ctx)
    assert ep.engine == "mysql" and ep.unix_socket and ep.user.startswith("drill_")
    assert "password" not in json.dumps(ep.public())
    with connect(ep) as conn, conn.cursor() as cur:
        cur.execute("select count(*), max(created_at) from orders")
        count, newest = cur.fetchone()
        cur.execute("select count(*) from orders where created_at >= %s", (demo.target_time.replace(tzinfo=None),))
        (after,) = cur.fetchone()
        cur.execute("select count(*) from order_items")
        (items,) = cur.fetchone()
        cur.execute("select count(*) from customers")
        (customers,) = cur.fetchone()
    assert count == demo.expected["orders"]
    assert newest == demo.last_order_before_target.replace(tzinfo=None)  # the last commit before the target...
    assert after == 0  # ...and nothing at or after it
    assert items == demo.expected["order_items"]
    assert customers == demo.expected["customers"]
    assert demo.after_target["orders"] > 0  # the source did have rows beyond the target

    proof = backend.recovery_proof()
    assert proof is not None and proof["complete"] is True, proof
    assert (proof["reached"]["file"], proof["reached"]["position"]) == (
        proof["requested"]["file"],
        proof["requested"]["position"],
    )
    facts = [f.to_dict() for f in backend.verify_isolation(ready, ctx)]
    assert facts and all(f["passed"] for f in facts), facts
    listen = next(f for f in facts if f["check"] == "listen")
    assert listen["value"]["skip_networking"] == 1
    target = backend.target_facts()
    assert target["datadir"] == reg[0].id and "MariaDB" in str(target["server_version"])
    assert target["recovery"] == proof  # the proof reaches the evidence

    root = Path(reg[0].attrs["run_dir"])
    result = backend.teardown(reg[0], ctx)
    assert result.deleted and result.verified_at, result
    assert not root.exists() and not pids_using(root)
    again = backend.teardown(reg[0], ctx)  # idempotent
    assert again.deleted


def test_pitr_latest_replays_to_the_end(demo: DemoSource, base: Path) -> None:
    ctx, reg = step_ctx()
    backend = create(_source(demo, target_time="latest"), settings_for(base / "run-latest", "run-latest"))
    try:
        report = backend.preflight(ctx)
        rp = report.recovery_point
        last = demo.binlogs / "mysql-bin.000002"
        assert rp["requested"]["file"] == last.name and rp["requested"]["position"] == last.stat().st_size
        assert rp["effective_stop"].startswith("end of the binlog chain")
        assert "ends with a Stop event" in rp["restorable_range_ends"]  # the demo source was shut down
        restored = backend.restore(report.plan, ctx)
        ready = backend.await_ready(restored, ctx)
        with connect(backend.endpoint(ready, ctx)) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from orders")
            assert cur.fetchone()[0] == demo.expected["orders"] + demo.after_target["orders"]
        proof = backend.recovery_proof()
        assert proof is not None and proof["complete"] and proof["reached"]["position"] == last.stat().st_size
    finally:
        for r in reversed(reg):
            assert backend.teardown(r, ctx).deleted


def test_a_target_before_the_backup_ended_is_a_backup_defect(demo: DemoSource, base: Path) -> None:
    ctx, reg = step_ctx()
    backend = create(_source(demo, target_time=demo.target_time - timedelta(hours=1)), settings_for(base / "x"))
    with pytest.raises(BackupDefect, match=r"before the backup finished.*restorable range \S+ \.\. \S+"):
        backend.preflight(ctx)
    assert reg == [] and not (base / "x").exists()


def test_a_target_after_the_last_binlog_event_is_a_backup_defect(demo: DemoSource, base: Path) -> None:
    ctx, _ = step_ctx()
    backend = create(_source(demo, target_time=demo.target_time + timedelta(hours=1)), settings_for(base / "x"))
    with pytest.raises(BackupDefect, match=r"after the last event in the binlogs; restorable range"):
        backend.preflight(ctx)


def test_a_missing_binlog_the_target_needs_is_a_backup_defect(demo: DemoSource, base: Path) -> None:
    partial = base / "partial-binlogs"
    shutil.copytree(demo.binlogs, partial)
    chown_tree(partial, run_as_for_mariadb())  # the binlogs belong to the server's user, as on the source
    (partial / "mysql-bin.000002").unlink()
    ctx, reg = step_ctx()
    backend = create(_source(demo, binlogs=partial), settings_for(base / "x"))
    with pytest.raises(BackupDefect, match=r"chain breaks before target_time .*mysql-bin\.000002: missing from"):
        backend.preflight(ctx)
    assert reg == []


def test_a_directory_that_is_not_a_backup_is_a_backup_defect(demo: DemoSource, base: Path) -> None:
    ctx, _ = step_ctx()
    backend = create(_source(demo, backup=demo.binlogs), settings_for(base / "x"))
    with pytest.raises(BackupDefect, match=r"not a complete mariadb-backup backup.*xtrabackup_checkpoints"):
        backend.preflight(ctx)


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import structlog
    from drills.backends.base import BackendSettings, StepContext
    from drills.engines.mariadb.backend import create
    from drills.clock import SystemClock
    from drills.engines.mariadb.declaration import MariadbPitrSource

    src = MariadbPitrSource.model_validate(json.loads(sys.argv[1]))
    journal = Path(sys.argv[3])
    def register(r):
        journal.write_text(json.dumps(r.to_dict()))  # journaled before the datadir exists
    clock = SystemClock()
    ctx = StepContext(clock=clock, deadline_ns=clock.monotonic_ns() + int(300e9),
                      log=structlog.get_logger(), register=register)
    backend = create(src, BackendSettings(run_id="killed", run_dir=Path(sys.argv[2]), clock=clock))
    report = backend.preflight(ctx)
    restored = backend.restore(report.plan, ctx)
    print("awaiting", flush=True)
    backend.await_ready(restored, ctx)
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_teardown_after_the_runner_is_sigkilled_during_await(demo: DemoSource, base: Path) -> None:
    run_dir = base / "run-killed"
    journal = base / "killed-resource.json"
    src = _source(demo).model_dump(mode="json")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(src), str(run_dir), str(journal)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        seen = []
        for line in child.stdout:  # structlog writes its lines to stdout too
            seen.append(line)
            if line.strip() == "awaiting":
                break
        assert seen and seen[-1].strip() == "awaiting", seen
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    resource = Resource.from_dict(json.loads(journal.read_text()))
    root = Path(resource.attrs["run_dir"])
    assert pids_using(root), "the server should have outlived its runner (own session)"

    # after the crash the backend is rebuilt without the runbook, from the journal alone
    ctx, _ = step_ctx()
    rebuilt = create(None, settings_for(base / "rebuilt", "killed"))  # it does not know the crashed run's dir
    result = rebuilt.teardown(resource, ctx)
    assert result.deleted, result
    assert not pids_using(root)
    assert not root.exists()
