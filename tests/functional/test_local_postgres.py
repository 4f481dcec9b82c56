"""Real PITR and dump drills against real PostgreSQL servers started here."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings, StepContext
from drills.clock import iso
from drills.demo.postgres import DemoSource
from drills.engines.postgres.backend import LocalPostgres
from drills.engines.postgres.server import PgCluster
from drills.engines.postgres.steps import PgRestored
from drills.errors import BackupDefect
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import read_events, summarize
from drills.logs import configure
from drills.runbook import load_runbook
from validators.endpoint import Endpoint, Secret

pytestmark = pytest.mark.postgres


def copy_demo(demo: DemoSource, dest: Path, **replace: str) -> Path:
    """A private copy of the demo's runbook folder, with text replaced in the runbook."""
    shutil.copytree(demo.workdir, dest, ignore=shutil.ignore_patterns("source", "evidence"))
    dest.chmod(0o755)
    text = (dest / "runbook.yaml").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (dest / "runbook.yaml").write_text(text)
    return dest / "runbook.yaml"


def finding(res: RunResult, name: str) -> dict[str, Any]:
    return next(f for f in res.findings if f["check"] == name or name in f["check"])


def no_server_left(run_id: str) -> bool:
    out = subprocess.run(["pgrep", "-af", "postgres"], capture_output=True, text=True, check=False).stdout
    return run_id not in out


def test_pitr_lands_exactly_on_the_target(demo_source: DemoSource) -> None:
    res = run_drill(load_runbook(demo_source.runbook))
    assert res.verdict == "passed", res.to_json()
    assert res.exit_code == 0
    assert finding(res, "every order committed before the target")["actual"] == demo_source.rows_before_target
    assert finding(res, "no order committed after the target")["actual"] == 0
    assert finding(res, "orders")["actual"] == demo_source.rows_before_target
    assert res.rpo_seconds is not None and 0 <= res.rpo_seconds < 0.2  # rows arrive every 50 ms
    assert res.rto_seconds is not None and res.rto_seconds > 0
    assert no_server_left(res.run_id)
    assert not list(Path(tempfile.gettempdir()).glob(f"restore-drill-{res.run_id}*"))
    ev = read_and_verify(res.evidence, load_verifiers(demo_source.public_key))["predicate"]  # type: ignore[arg-type]
    assert ev["results"]["verdict"] == "passed"
    assert {c["check"] for c in ev["isolation_checks"] if c["passed"]} >= {"listen_addresses", "archive_mode_off"}
    assert ev["recovery_point"]["base_backup"]["label"] == "restore-drills demo"
    assert ev["teardown"]["all_deleted"] is True


class _Leaky(LocalPostgres):
    """A restored server that also listens on TCP (a regression in the isolating settings)."""

    def _isolating_settings(self, cluster: PgCluster) -> dict[str, str]:
        return {**super()._isolating_settings(cluster), "listen_addresses": "127.0.0.1"}


def test_a_restored_server_with_a_tcp_listener_fails_the_drill_before_any_validator(demo_source: DemoSource) -> None:
    res = run_drill(load_runbook(demo_source.runbook), RunOptions(backend_factory=_Leaky))
    assert (res.verdict, res.exit_code, res.failed_state) == ("failed", 3, "await_ready"), res.to_json()
    assert "IsolationError" in (res.error or "") and "listen_addresses" in (res.error or "")
    assert res.drill.endpoint is None and res.drill.validation is None  # nothing connected, nothing validated
    assert no_server_left(res.run_id)
    ev = read_and_verify(res.evidence, load_verifiers(demo_source.public_key))["predicate"]  # type: ignore[arg-type]
    facts = {c["check"]: c for c in ev["isolation_checks"]}
    assert (facts["listen_addresses"]["passed"], facts["listen_addresses"]["value"]) == (False, "127.0.0.1")
    assert facts["archive_mode_off"]["passed"] is True  # the rest was read back too
    assert ev["error"]["type"] == "IsolationError" and ev["teardown"]["all_deleted"] is True


def test_latest_recovers_every_archived_commit(demo_source: DemoSource, tmp_path: Path) -> None:
    rb = copy_demo(
        demo_source,
        tmp_path / "d",
        **{
            f"target_time: {iso(demo_source.target_time)}": "target_time: latest",
            f"orders: {{equals: {demo_source.rows_before_target}}}": "orders: {min: 1}",
        },
    )
    res = run_drill(load_runbook(rb))
    everything = demo_source.rows_before_target + demo_source.rows_after_target
    assert finding(res, "orders")["actual"] == everything
    assert finding(res, "no order committed after the target")["actual"] == 0  # relative to the restore request
    assert res.verdict == "failed"  # the runbook still expects exactly the pre-target activity rows
    assert (
        finding(res, "demo activity")["actual"] == demo_source.rows_before_target - 5000 + demo_source.rows_after_target
    )


def test_target_before_the_base_backup_end_fails_the_drill_before_anything_starts(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path
) -> None:
    early = demo_source.target_time - timedelta(hours=1)
    rb = copy_demo(
        demo_source, tmp_path / "d", **{f"target_time: {iso(demo_source.target_time)}": f"target_time: {iso(early)}"}
    )
    res = run_drill(load_runbook(rb))
    assert res.verdict == "failed" and res.exit_code == 1 and res.failed_state == "preflight"
    assert "before the end of the base backup" in (res.error or "")
    events = read_events(drill_home / "runs" / res.run_id / "journal.jsonl")
    assert not [e for e in events if e["event"] == "resource_registered" and e["resource"]["kind"] != "scratch-dir"]
    assert res.evidence is not None  # a refused drill still leaves a signed record


def test_target_after_the_last_archived_commit_fails_the_drill(demo_source: DemoSource, tmp_path: Path) -> None:
    late = demo_source.target_time + timedelta(hours=1)
    rb = copy_demo(
        demo_source, tmp_path / "d", **{f"target_time: {iso(demo_source.target_time)}": f"target_time: {iso(late)}"}
    )
    res = run_drill(load_runbook(rb))
    assert res.verdict == "failed" and res.exit_code == 1
    assert re.search(r"not before any archived commit \(the newest usable one is \d{4}-", res.error or "")


def test_missing_start_segment_fails_the_drill_naming_it(demo_source: DemoSource, tmp_path: Path) -> None:
    rb = copy_demo(demo_source, tmp_path / "d")
    wal = rb.parent / "backups" / "wal"
    label = (rb.parent / "backups" / "base" / "backup_label").read_text()
    first = re.search(r"\(file ([0-9A-F]{24})\)", label).group(1)  # type: ignore[union-attr]
    (wal / first).unlink()  # the segment the base backup starts in
    res = run_drill(load_runbook(rb))
    assert res.verdict == "failed" and res.exit_code == 1
    assert f"{first}: missing" in (res.error or "")


def test_backup_of_another_major_version_says_what_to_install(demo_source: DemoSource, tmp_path: Path) -> None:
    rb = copy_demo(demo_source, tmp_path / "d")
    (rb.parent / "backups" / "base" / "PG_VERSION").write_text("9\n")
    res = run_drill(load_runbook(rb))
    assert res.exit_code == 2
    assert "needs PostgreSQL 9 server binaries" in (res.error or "")
    assert "apt-get install postgresql-9" in (res.error or "")


def test_dump_drill_restores_with_pg_restore_jobs(demo_source: DemoSource, demo_dump: Path, tmp_path: Path) -> None:
    d = tmp_path / "dump"
    d.mkdir()
    shutil.copy(demo_dump, d / "shop.pgc")
    everything = demo_source.rows_before_target + demo_source.rows_after_target
    (d / "rb.yaml").write_text(
        f"""name: shop-dump
source: {{kind: postgres-dump, archive: shop.pgc, database: shop, jobs: 2}}
objectives: {{rto_seconds: 60, rpo_seconds: 86400}}
validators:
  row_counts: {{orders: {{equals: {everything}}}, customers: {{equals: 2000}}}}
  smoke: [{{name: view works, sql: "select count(*) from order_totals", expect: 2000}}]
"""
    )
    res = run_drill(load_runbook(d / "rb.yaml"))
    assert res.verdict == "passed", (res.findings, res.error, res.rpo_seconds)
    assert finding(res, "orders")["actual"] == everything
    rp = res.drill.preflight.recovery_point  # type: ignore[union-attr]
    assert rp["kind"] == "dump" and rp["created_at"]
    assert res.rpo_seconds is not None and res.rpo_seconds >= 0


def test_truncated_dump_fails_the_drill_and_still_tears_down(demo_dump: Path, tmp_path: Path) -> None:
    d = tmp_path / "dump"
    d.mkdir()
    data = demo_dump.read_bytes()
    (d / "shop.pgc").write_bytes(data[: len(data) * 2 // 3])
    (d / "rb.yaml").write_text(
        "name: shop-dump\n"
        "source: {kind: postgres-dump, archive: shop.pgc, database: shop}\n"
        "objectives: {rto_seconds: 60}\n"
    )
    res = run_drill(load_runbook(d / "rb.yaml"))
    assert res.verdict == "failed"
    assert res.exit_code in (2, 3)
    assert "pg_restore" in (res.error or "") or "pg_dump archive" in (res.error or "")
    assert no_server_left(res.run_id)
    assert all(r.deleted for r in res.drill.teardown_results)
    assert res.evidence is not None and res.evidence.exists()


class _SecretBackend(LocalPostgres):
    """Hands the validators a password and logs a DSN with it: neither may reach logs or evidence."""

    SECRET = "Pa55-w0rd-never-to-be-seen"

    def endpoint(self, ready: PgRestored, ctx: StepContext) -> Endpoint:
        ep = super().endpoint(ready, ctx)
        ctx.log.info(
            "connecting", dsn=f"postgresql://postgres:{self.SECRET}@{ep.host}/shop", note=f"password={self.SECRET}"
        )
        return Endpoint(ep.engine, ep.host, ep.port, ep.database, ep.user, password=Secret(self.SECRET), admin=True)


def test_no_password_in_logs_journal_or_evidence(demo_source: DemoSource, tmp_path: Path, drill_home: Path) -> None:
    out = io.StringIO()
    configure("json", "debug", stream=out)
    try:
        res = run_drill(
            load_runbook(demo_source.runbook),
            RunOptions(backend_factory=_SecretBackend),
        )
    finally:
        structlog.reset_defaults()
    assert res.verdict == "passed"
    secret = _SecretBackend.SECRET
    assert "connecting" in out.getvalue()  # the event was logged ...
    assert secret not in out.getvalue()  # ... with the password masked
    assert secret not in (drill_home / "runs" / res.run_id / "journal.jsonl").read_text()
    assert res.evidence is not None and secret not in res.evidence.read_text()
    assert secret not in json.dumps(res.to_json())


HARNESS = """
import sys, time
from drills.api import RunOptions, run_drill
from drills.engines.postgres.backend import LocalPostgres
from drills.engines.postgres.steps import PgRestored
from drills.runbook import load_runbook
from drills.logs import configure

configure("json")  # logs to stderr; stdout carries the harness protocol

class Slow(LocalPostgres):
    def await_ready(self, restored, ctx):
        print("IN_AWAIT", flush=True)
        time.sleep(60)
        return super().await_ready(restored, ctx)

res = run_drill(load_runbook(sys.argv[1]), RunOptions(backend_factory=lambda s, st: Slow(s, st)))
print("EXIT", res.exit_code, res.evidence, flush=True)
sys.exit(res.exit_code)
"""


def _start_and_wait_for_await(runbook: Path, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(runbook)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "IN_AWAIT" in line, line
    return proc


def _only_run(home: Path) -> str:
    runs = sorted(p.name for p in (home / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_sigkill_during_await_ready_then_drill_teardown_leaves_nothing(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path
) -> None:
    proc = _start_and_wait_for_await(demo_source.runbook, tmp_path)
    run_id = _only_run(drill_home)
    summary = summarize(run_id, read_events(drill_home / "runs" / run_id / "journal.jsonl"))
    server = next(r for r in summary.outstanding if r.kind == "postgres-server")
    datadir = Path(server.id)
    for _ in range(100):  # the restored server is up (recovering) while the runner waits
        if (datadir / "postmaster.pid").exists():
            break
        time.sleep(0.05)
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    proc.kill()
    proc.wait()
    assert os.path.exists(f"/proc/{pid}")  # SIGKILL of the runner left the server behind ...

    runs = subprocess.run([sys.executable, "-m", "drills.cli", "runs"], capture_output=True, text=True, check=True)
    assert run_id in runs.stdout and "crashed" in runs.stdout and "drill teardown" in runs.stdout

    td = subprocess.run(
        [sys.executable, "-m", "drills.cli", "teardown", run_id], capture_output=True, text=True, check=False
    )
    assert td.returncode == 0, td.stderr
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")  # ... and `drill teardown` stopped it
    assert not datadir.exists() and not datadir.parent.parent.exists()
    after = summarize(run_id, read_events(drill_home / "runs" / run_id / "journal.jsonl"))
    assert after.outstanding == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_await_ready_tears_down_and_writes_evidence(
    demo_source: DemoSource, tmp_path: Path, drill_home: Path, sig: signal.Signals
) -> None:
    proc = _start_and_wait_for_await(demo_source.runbook, tmp_path)
    run_id = _only_run(drill_home)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert no_server_left(run_id)
    evidence = Path(out.split("EXIT 130 ", 1)[1].split()[0])
    ev = read_and_verify(evidence, load_verifiers(demo_source.public_key))["predicate"]
    assert ev["results"]["verdict"] == "failed" and ev["interrupted"] is True
    assert ev["error"]["state"] == "await_ready"
    assert ev["teardown"]["all_deleted"] is True


def test_teardown_refuses_a_resource_record_outside_its_layout(tmp_path: Path) -> None:
    from drills.clock import SystemClock
    from drills.engines.postgres.teardown import teardown_server
    from drills.errors import TeardownError
    from drills.resources import Resource

    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "data").mkdir()
    r = Resource(
        "postgres-server",
        str(victim / "data"),
        "local-postgres",
        {
            "root": str(victim),
            "datadir": str(victim / "data"),
            "socket_dir": "/x",
            "port": 1,
            "bindir": "/usr/bin",
            "major": 15,
        },
    )
    ctx = StepContext(SystemClock(), 0, structlog.get_logger(), lambda _r: None)
    with pytest.raises(TeardownError, match="refusing"):
        teardown_server(r, ctx)
    assert victim.exists()


def test_preflight_refuses_a_directory_that_is_not_a_base_backup(tmp_path: Path) -> None:
    from drills.clock import SystemClock
    from drills.engines.postgres.declaration import PostgresPitrSource

    (tmp_path / "base").mkdir()
    (tmp_path / "wal").mkdir()
    src = PostgresPitrSource(
        kind="postgres-pitr", base_backup=tmp_path / "base", wal_archive=tmp_path / "wal", target_time="latest"
    )
    b = LocalPostgres(src, BackendSettings("r", tmp_path, SystemClock()))
    ctx = StepContext(SystemClock(), 0, structlog.get_logger(), lambda _r: None)
    with pytest.raises(BackupDefect, match="no base backup found"):
        b.preflight(ctx)


def test_keep_leaves_the_restored_server_for_inspection_until_drill_teardown(
    demo_source: DemoSource, drill_home: Path
) -> None:
    res = run_drill(load_runbook(demo_source.runbook), RunOptions(keep_seconds=600))
    assert res.verdict == "passed"
    ev = read_and_verify(res.evidence, load_verifiers(demo_source.public_key))["predicate"]  # type: ignore[arg-type]
    assert ev["teardown"]["kept_until_expiry"] is True and ev["teardown"]["all_deleted"] is False
    assert not no_server_left(res.run_id)  # still there to inspect
    summary = summarize(res.run_id, read_events(drill_home / "runs" / res.run_id / "journal.jsonl"))
    assert summary.kept and {r.kind for r in summary.outstanding} == {"postgres-server", "scratch-dir"}
    td = subprocess.run(
        [sys.executable, "-m", "drills.cli", "teardown", res.run_id], capture_output=True, text=True, check=False
    )
    assert td.returncode == 0, td.stderr
    assert no_server_left(res.run_id)
    assert summarize(res.run_id, read_events(drill_home / "runs" / res.run_id / "journal.jsonl")).outstanding == []


def test_a_hung_validator_cannot_hold_the_drill_past_its_deadline(demo_source: DemoSource, tmp_path: Path) -> None:
    rb = copy_demo(
        demo_source,
        tmp_path / "d",
        **{
            "objectives: {rto_seconds: 60, rpo_seconds: 5}": "objectives: {rto_seconds: 60, rpo_seconds: 5}\n"
            "deadline_seconds: 6",
            "  freshness:": '    - {name: hangs, sql: "select pg_sleep(60) is null", expect: false}\n  freshness:',
        },
    )
    res = run_drill(load_runbook(rb))
    assert res.verdict == "failed"
    hung = finding(res, "hangs")
    assert hung["passed"] is False and "statement timeout" in hung["detail"]
    # the drill's own timeline: validation ended within the 6 s deadline (counted from the restore request),
    # not after the query's 60 s; the server's statement timeout is real time, so the bound is on the record
    first_restore = next(e for e in res.drill.timeline if e.state == "restore")
    validate = next(e for e in res.drill.timeline if e.state == "validate")
    assert (validate.end_ns - first_restore.start_ns) / 1e9 < 6 + 2, res.drill.timeline
    assert no_server_left(res.run_id)
    assert all(r.deleted for r in res.drill.teardown_results)
