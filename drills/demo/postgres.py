"""``drill demo``: a whole PITR drill on this machine with nothing but the
PostgreSQL server binaries.

It plays production first: a source cluster with WAL archiving, a small shop
schema, a base backup, then orders committed one by one. It picks a target
time between two commits in the middle of that activity, captures a
baseline, writes a runbook, stops the source (production is "gone"), and
runs the drill as a user would, then verifies the evidence. The smoke
queries prove that every order committed before the target is present and
none after it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from drills.clock import SystemClock, iso
from drills.demo.common import drill_and_report
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.errors import InfrastructureError
from drills.osutil import ensure_reachable, free_port, private_dir
from drills.wait import every, until

__all__ = ["DemoSource", "archiving_options", "build_demo_source", "run_demo"]

ACTIVITY_ROWS = 40
ACTIVITY_INTERVAL_S = 0.05


@dataclass(frozen=True)
class DemoSource:
    workdir: Path
    runbook: Path
    public_key: Path
    target_time: datetime
    rows_before_target: int  # activity rows committed at or before the target
    rows_after_target: int


def _psql(cluster: PgCluster, sql: str) -> None:
    proc = subprocess.run(
        [cluster.bin.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", cluster.conninfo("shop"), "-c", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise InfrastructureError(f"demo SQL failed: {proc.stderr.strip()}")


def archiving_options(wal: Path) -> dict[str, str]:
    """Server settings of the demo's "production": socket only, every WAL segment archived to ``wal``."""
    return {
        "listen_addresses": "''",
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": f"'test ! -f {wal}/%f && cp %p {wal}/%f'",
        "fsync": "off",  # a demo source, not a database to keep: faster on slow disks
    }


def build_demo_source(workdir: Path) -> DemoSource:
    """Play production: archive WAL, back up, write activity; return what the drill must find."""
    import psycopg

    from drills.evidence.keys import generate_keypair
    from validators.baseline import capture_baseline, write_baseline
    from validators.endpoint import Endpoint

    bins = find_pg_binaries()
    run_as = run_as_for_server()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    ensure_reachable(workdir, run_as)
    wal = private_dir(workdir / "backups" / "wal", run_as)
    wal.chmod(0o755)
    src = PgCluster(
        bins,
        workdir / "source" / "data",
        workdir / "source" / "sock",
        free_port(),
        run_as,
        workdir / "source" / "server.log",
    )
    (workdir / "source").mkdir(exist_ok=True)
    (workdir / "source").chmod(0o755)
    src.initdb()
    src.start(wait=True, options=archiving_options(wal))
    try:
        with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("create database shop")
        _psql(src, resources.files("drills.demo").joinpath("schema.sql").read_text())
        base = workdir / "backups" / "base"
        proc = subprocess.run(
            [bins.tool("pg_basebackup"), "-h", str(src.socket_dir), "-p", str(src.port), "-U", "postgres",
             "-D", str(base), "-X", "none", "-c", "fast", "-l", "restore-drills demo"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise InfrastructureError(f"pg_basebackup failed: {proc.stderr.strip()}")
        target, mid = _write_activity(src)
        ep = Endpoint(engine="postgres", host=str(src.socket_dir), port=src.port, database="shop", user="postgres")
        baseline = capture_baseline(ep)
        baseline_path = workdir / "baselines" / "shop.json"
        baseline_path.parent.mkdir(exist_ok=True)
        write_baseline(baseline, baseline_path)
    finally:
        src.stop()
    keys = workdir / "keys"
    keys.mkdir(exist_ok=True)
    key = keys / "drill.key"
    if not key.exists():
        generate_keypair(key)
    pre = 5000 + mid
    runbook = workdir / "runbook.yaml"
    runbook.write_text(_runbook_text(target, pre, mid))
    return DemoSource(workdir, runbook, key.with_suffix(".pub"), target, pre, ACTIVITY_ROWS - mid)


def _write_activity(src: PgCluster) -> tuple[datetime, int]:
    """Commit orders one by one; return a target between two commits in the middle, and how many precede it."""
    import psycopg

    stamps: list[datetime] = []
    with psycopg.connect(src.conninfo("shop"), autocommit=True) as conn:
        for i in range(ACTIVITY_ROWS):
            row = conn.execute(
                "insert into orders (customer_id, status, total_cents) values (%s, 'new', %s) returning created_at",
                (1 + i, 1000 + i),
            ).fetchone()
            assert row is not None
            stamps.append(row[0])
            time.sleep(ACTIVITY_INTERVAL_S)
        mid = ACTIVITY_ROWS // 2
        target = stamps[mid - 1] + (stamps[mid] - stamps[mid - 1]) / 2
        conn.execute("select pg_switch_wal()")
        seg = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()
        _wait_archived(conn, seg[0] if seg else "")
    return target, mid


def _wait_archived(conn: Any, segment: str, timeout_s: float = 30) -> None:
    """pg_switch_wal() closes the segment; wait until archive_command has copied everything before it."""

    def archived() -> bool:
        row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
        return bool(row and row[0] and row[0] >= _previous(segment))

    if not until(SystemClock(), timeout_s, archived, "WAL archived", policy=every(0.05)):
        raise InfrastructureError("the demo source did not archive its WAL in time")


def _previous(segment: str) -> str:
    from drills.engines.postgres.wal import segment_name, split_name

    per = 0x100  # the demo's cluster uses initdb's default 16 MiB segments
    tli, n = split_name(segment, per)
    return segment_name(tli, n - 1, per)


def _runbook_text(target: datetime, before: int, activity_before: int) -> str:
    return f"""# Written by `drill demo`: a point-in-time restore of the demo shop database.
name: demo-shop-pitr
description: PITR of the demo shop into a throwaway local PostgreSQL, target between two commits
source:
  kind: postgres-pitr
  base_backup: backups/base
  wal_archive: backups/wal
  target_time: {iso(target)}
  database: shop
objectives: {{rto_seconds: 60, rpo_seconds: 5}}
validators:
  schema: {{baseline: baselines/shop.json}}
  row_counts:
    customers: {{equals_baseline: true}}
    products: {{equals_baseline: true}}
    orders: {{equals: {before}}}
    order_items: {{min: 5000}}
  smoke:
    - name: every order committed before the target is present
      sql: "select count(*) from orders where created_at <= %(target_time)s"
      expect: {before}
    - name: no order committed after the target
      sql: "select count(*) from orders where created_at > %(target_time)s"
      expect: 0
    - name: demo activity up to the target ({activity_before} orders)
      sql: "select count(*) from orders where status = 'new'"
      expect: {activity_before}
    - name: order totals view answers
      sql: "select count(*) > 0 from order_totals"
      expect: true
  freshness: {{column: orders.created_at}}
evidence: {{dir: evidence, signing_key: keys/drill.key}}
"""


def run_demo(workdir: Path | None, *, as_json: bool = False) -> int:
    wd = workdir or Path(tempfile.mkdtemp(prefix="restore-drills-demo-"))
    t0 = time.monotonic()

    def say(message: str) -> None:
        if not as_json:
            print(message, file=sys.stderr)

    say(f"demo: building a source cluster, base backup and WAL archive in {wd}")
    demo = build_demo_source(wd)
    say(
        f"demo: target {iso(demo.target_time)}: {demo.rows_after_target} orders were committed after it "
        f"and must be absent; running the drill"
    )
    return drill_and_report(demo.runbook, demo.public_key, wd, as_json=as_json, started=t0)
