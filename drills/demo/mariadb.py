"""``drill demo --engine mariadb``: a real source, backup, binlogs and runbook in seconds.

Builds what a production MariaDB would give a drill: a source server with
``log_bin`` and ``binlog_format=ROW``, a small shop schema, a
``mariadb-backup`` backup, then a few seconds of timestamped activity (one
order every ~50 ms, each committed on its own) spread over two binlog files.
The target time is a whole second in the middle of that activity, because
binlog timestamps have one-second resolution: every order created before it
must come back and none created at or after it. The runbook's smoke queries
check exactly that, with the counts known here.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from drills.clock import Clock, iso
from drills.engines.mariadb.server import MariaServer, find_maria_binaries, run_as_for_mariadb
from drills.errors import InfrastructureError, PreflightError
from drills.osutil import os_user, private_dir, unreachable_ancestor

__all__ = ["DemoSource", "build_demo_source", "run_demo"]

SCHEMA = """
create table customers (
  id int unsigned primary key auto_increment,
  email varchar(190) not null,
  name varchar(120) not null,
  country char(2) not null,
  created_at datetime(6) not null default current_timestamp(6),
  unique key uq_customers_email (email),
  key ix_customers_country (country)
) engine=InnoDB;
create table orders (
  id int unsigned primary key auto_increment,
  customer_id int unsigned not null,
  status enum('new','paid','shipped','cancelled') not null default 'new',
  total_cents int unsigned not null,
  created_at datetime(6) not null default current_timestamp(6),
  key ix_orders_customer (customer_id),
  key ix_orders_created_at (created_at),
  constraint fk_orders_customer foreign key (customer_id) references customers (id)
) engine=InnoDB;
create table order_items (
  id int unsigned primary key auto_increment,
  order_id int unsigned not null,
  sku varchar(32) not null,
  quantity smallint unsigned not null,
  price_cents int unsigned not null,
  key ix_items_order (order_id),
  key ix_items_sku (sku),
  constraint fk_items_order foreign key (order_id) references orders (id) on delete cascade
) engine=InnoDB;
"""

DATABASE = "shop"
CUSTOMERS, ORDERS, ITEMS_PER_ORDER = 400, 1500, 2


@dataclass(frozen=True)
class DemoSource:
    """What the demo produced and what a correct restore must show."""

    workdir: Path
    runbook: Path
    backup: Path
    binlogs: Path
    target_time: datetime
    expected: dict[str, int]  # counts at the target: customers, orders, order_items
    after_target: dict[str, int]  # rows the source has beyond the target (must be absent)
    last_order_before_target: datetime
    first_order_after_target: datetime
    timings: dict[str, float] = field(default_factory=dict)
    baseline: Path | None = None
    public_key: Path | None = None


def _load_schema(conn: Any, rng: random.Random) -> None:
    with conn.cursor() as cur:
        cur.execute(f"create database {DATABASE} character set utf8mb4")
        cur.execute(f"use {DATABASE}")
        for stmt in filter(None, (s.strip() for s in SCHEMA.split(";"))):
            cur.execute(stmt)
        conn.begin()
        countries = ["DE", "FR", "NL", "US", "GB", "ES", "IT", "PL"]
        cur.executemany(
            "insert into customers (email, name, country, created_at) values (%s, %s, %s, %s)",
            [
                (f"c{i}@example.com", f"Customer {i}", rng.choice(countries), datetime(2025, 1, 1) + timedelta(hours=i))
                for i in range(1, CUSTOMERS + 1)
            ],
        )
        cur.executemany(
            "insert into orders (customer_id, status, total_cents, created_at) values (%s, %s, %s, %s)",
            [
                (
                    rng.randint(1, CUSTOMERS),
                    rng.choice(["paid", "shipped", "cancelled"]),
                    rng.randint(500, 50000),
                    datetime(2025, 6, 1) + timedelta(minutes=7 * i),
                )
                for i in range(1, ORDERS + 1)
            ],
        )
        cur.executemany(
            "insert into order_items (order_id, sku, quantity, price_cents) values (%s, %s, %s, %s)",
            [
                (o, f"SKU-{rng.randint(1, 300):04d}", rng.randint(1, 5), rng.randint(100, 20000))
                for o in range(1, ORDERS + 1)
                for _ in range(ITEMS_PER_ORDER)
            ],
        )
        conn.commit()


def _one_order(conn: Any, rng: random.Random) -> datetime:
    """One order and its item in one transaction; created_at is the server's NOW(6), as in the binlog."""
    with conn.cursor() as cur:
        conn.begin()
        cur.execute(
            "insert into orders (customer_id, total_cents) values (%s, %s)",
            (rng.randint(1, CUSTOMERS), rng.randint(500, 50000)),
        )
        order_id = cur.lastrowid
        cur.execute(
            "insert into order_items (order_id, sku, quantity, price_cents) values (%s, %s, 1, %s)",
            (order_id, f"SKU-{rng.randint(1, 300):04d}", rng.randint(100, 20000)),
        )
        cur.execute("select created_at from orders where id = %s", (order_id,))
        created: datetime = cur.fetchone()[0]
        conn.commit()
    return created.replace(tzinfo=UTC)


def _counts(conn: Any, where: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    with conn.cursor() as cur:
        for table, cond in (
            ("customers", ""),
            ("orders", where),
            ("order_items", f"order_id in (select id from {DATABASE}.orders where {where})" if where else ""),
        ):
            cur.execute(f"select count(*) from {DATABASE}.{table} {'where ' + cond if cond.strip() else ''}")
            out[table] = int(cur.fetchone()[0])
    return out


def _take_backup(tool: str, server: MariaServer, backup: Path) -> None:
    proc = subprocess.run(
        [
            tool,
            "--no-defaults",
            "--backup",
            f"--socket={server.socket}",
            f"--user={os_user()}",
            f"--target-dir={backup}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )
    if proc.returncode != 0:
        raise InfrastructureError(f"mariadb-backup --backup failed: {proc.stderr.strip()[-600:]}")


Activity = tuple[datetime, dict[str, int], dict[str, int], datetime, datetime]


def _write_activity(server: MariaServer, clock: Clock, rng: random.Random, seconds: float) -> Activity:
    """Orders every ~50 ms around a whole-second target; returns it with the counts before it and in total."""
    with contextlib.closing(server.connect(database=DATABASE)) as conn:
        conn.autocommit(False)
        first = _one_order(conn, rng)
        # a whole second at least 1 s into the activity; binlog timestamps are whole seconds
        target = first.replace(microsecond=0) + timedelta(seconds=2)
        end = target + timedelta(seconds=max(1.0, seconds - 2))
        flushed = False
        now = first
        while now < end:
            clock.sleep(0.05)
            wall = clock.now()
            if target - timedelta(milliseconds=100) <= wall < target + timedelta(milliseconds=20):
                # no transaction may straddle the target second: its binlog events would be split
                clock.sleep((target - wall).total_seconds() + 0.05)
            now = _one_order(conn, rng)
            if not flushed and now >= target - timedelta(milliseconds=500):
                with conn.cursor() as cur:
                    cur.execute("flush binary logs")  # the replay must cross a binlog file boundary
                flushed = True
        conn.autocommit(True)
        t = target.strftime("%Y-%m-%d %H:%M:%S")
        expected = _counts(conn, f"created_at < '{t}'")
        total = _counts(conn)
        with conn.cursor() as cur:
            cur.execute(f"select max(created_at) from orders where created_at < '{t}'")
            last_before: datetime = cur.fetchone()[0].replace(tzinfo=UTC)
            cur.execute(f"select min(created_at) from orders where created_at >= '{t}'")
            first_after: datetime = cur.fetchone()[0].replace(tzinfo=UTC)
    return target, expected, total, last_before, first_after


def _runbook(demo_dir: Path, target: datetime, expected: dict[str, int], baseline: Path) -> dict[str, Any]:
    t = target.strftime("%Y-%m-%d %H:%M:%S")
    validators: dict[str, Any] = {
        "smoke": [
            {
                "name": "orders before the target are present",
                "sql": f"select count(*) from {DATABASE}.orders where created_at < '{t}'",
                "expect": expected["orders"],
            },
            {
                "name": "no order at or after the target",
                "sql": f"select count(*) from {DATABASE}.orders where created_at >= '{t}'",
                "expect": 0,
            },
            {
                "name": "order items restored with their orders",
                "sql": f"select count(*) from {DATABASE}.order_items",
                "expect": expected["order_items"],
            },
            {
                "name": "every item belongs to an order",
                "sql": f"select count(*) from {DATABASE}.order_items i left join {DATABASE}.orders o "
                "on o.id = i.order_id where o.id is null",
                "expect": 0,
            },
        ],
        "freshness": {"column": f"{DATABASE}.orders.created_at"},
        "schema": {"baseline": str(baseline.relative_to(demo_dir)), "schemas": [DATABASE]},
        "row_counts": {
            f"{DATABASE}.customers": {"equals_baseline": True},
            f"{DATABASE}.orders": {"equals": expected["orders"]},
            f"{DATABASE}.order_items": {"equals": expected["order_items"]},
        },
    }
    return {
        "name": "mariadb-demo",
        "description": "Demo: point-in-time restore of a local MariaDB (mariadb-backup + binlogs) to a chosen second.",
        "source": {
            "kind": "mariadb-pitr",
            "backup": "backup",
            "binlogs": "source/binlogs",
            "target_time": iso(target),
            "database": DATABASE,
        },
        "objectives": {"rto_seconds": 300, "rpo_seconds": 5},
        "validators": validators,
        "evidence": {"dir": "evidence", "signing_key": "keys/drill.key"},
        "tags": {"engine": "mariadb", "demo": "true"},
    }


def build_demo_source(workdir: Path, clock: Clock, *, activity_seconds: float = 3.0) -> DemoSource:
    """Create the source, its backup and binlogs, a runbook and the expected counts under ``workdir``.

    The source server is stopped at the end; only the backup, the binlogs
    and the runbook remain (plus a baseline when the validators provide one).
    """
    started = clock.monotonic_ns()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round((clock.monotonic_ns() - started) / 1e9, 3)

    bins = find_maria_binaries(need=("backup",))
    run_as = run_as_for_mariadb()
    workdir = workdir.absolute()
    blocked = unreachable_ancestor(workdir, run_as)
    if blocked is not None:
        raise PreflightError(
            f"the MariaDB server user cannot reach {workdir}: {blocked} is not traversable",
            hint="use a demo directory under a path others may traverse (e.g. /var/tmp)",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    src_root = workdir / "source"
    backup = workdir / "backup"
    for stale in (src_root, backup):
        if stale.exists():
            raise PreflightError(f"{stale} already exists; give an empty demo directory")
    server = MariaServer(bins, src_root, run_as)
    binlogs = private_dir(src_root / "binlogs", run_as)
    rng = random.Random(20261126)  # noqa: S311 - demo data, not secrets
    try:
        server.install_db()
        server.start([f"--log-bin={binlogs / 'mysql-bin'}", "--server-id=1", "--binlog-format=ROW", "--sync-binlog=0"])
        server.wait_accepting(60)
        lap("source_started")
        with contextlib.closing(server.connect()) as conn:
            _load_schema(conn, rng)
        lap("schema_loaded")
        _take_backup(bins.tool("backup"), server, backup)
        lap("backup_taken")
        activity = _write_activity(server, clock, rng, activity_seconds)
        target, expected, total, last_before, first_after = activity
        lap("activity_written")
        baseline = _capture_baseline(server, workdir)
    finally:
        stopped = server.stop()
    if not stopped:
        raise InfrastructureError(f"the demo source server under {src_root} did not stop")
    for d in ("data", "sock", "tmp"):
        shutil.rmtree(src_root / d, ignore_errors=True)
    lap("source_stopped")
    from drills.evidence.keys import generate_keypair

    key = workdir / "keys" / "drill.key"
    key.parent.mkdir(exist_ok=True)
    if not key.exists():
        generate_keypair(key)
    runbook = workdir / "mariadb-demo.yaml"
    runbook.write_text(
        "# Written by `drill demo --engine mariadb`; paths are relative to this file.\n"
        + yaml.safe_dump(_runbook(workdir, target, expected, baseline), sort_keys=False)
    )
    after = {k: total[k] - expected[k] for k in total}
    return DemoSource(
        workdir=workdir,
        runbook=runbook,
        backup=backup,
        binlogs=binlogs,
        target_time=target,
        expected=expected,
        after_target=after,
        last_order_before_target=last_before,
        first_order_after_target=first_after,
        timings=timings,
        baseline=baseline,
        public_key=key.with_suffix(".pub"),
    )


def _capture_baseline(server: MariaServer, workdir: Path) -> Path:
    """Schema and row counts of the source (after the activity), for the schema and equals_baseline checks."""
    from validators.baseline import capture_baseline, write_baseline
    from validators.endpoint import Endpoint

    ep = Endpoint(
        engine="mysql", host="localhost", port=0, database=DATABASE, user=os_user(), unix_socket=str(server.socket)
    )
    path = workdir / "baselines" / "shop.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_baseline(capture_baseline(ep, [DATABASE]), path)
    return path


def run_demo(workdir: Path | None, *, as_json: bool = False) -> int:
    """``drill demo --engine mariadb``: build the source, run the drill as a user would, verify the evidence."""
    from drills.clock import SystemClock
    from drills.demo.common import drill_and_report

    wd = workdir or Path(tempfile.mkdtemp(prefix="restore-drills-mariadb-demo-", dir="/var/tmp"))
    if workdir is None:
        wd.chmod(0o755)  # the server's user must traverse it
    t0 = time.monotonic()

    def say(message: str) -> None:
        if not as_json:
            print(message, file=sys.stderr)

    say(f"demo: building a MariaDB source with binlogs, a mariadb-backup and activity in {wd}")
    demo = build_demo_source(wd, SystemClock())
    say(
        f"demo: target {iso(demo.target_time)}: {demo.after_target['orders']} orders were created after it "
        "and must be absent; running the drill"
    )
    return drill_and_report(demo.runbook, demo.public_key, wd, as_json=as_json, started=t0)
