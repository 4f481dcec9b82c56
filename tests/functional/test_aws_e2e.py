"""End to end: AWS drills against moto whose restored endpoint is a real local database.

moto plays the control plane (VPC, snapshots, restores, modifications,
teardown) with the restore/modify phases injected on a FakeClock by
:class:`aws_fakes.Fakes`, so the drill really waits (fake) minutes. The data
plane is a real local PostgreSQL 15 / MariaDB 10.11 holding the "snapshot's"
data. The runbook reaches it the way production reaches a private RDS
endpoint from outside the VPC: ``connect: {host: 127.0.0.1, port: N}``, the
override that :meth:`Endpoint.routed_to` applies, with a loopback port
forwarded to the server (what an SSM port-forwarding session is).

The local server is faithful about credentials: its master user starts with
the "production" password the drill never sees; a boto3 handler on the
injected session applies whatever ``MasterUserPassword`` the backend sends in
``ModifyDBInstance`` / ``ModifyDBCluster`` (only when the call succeeds), so
the validators authenticate with exactly the password the backend generated.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aws_fakes import REGION, Fakes, World, drill_leftovers, isolation, make_world
from dataplane import Tunnel, drop_master, execute, set_master_password
from moto import mock_aws
from servers import MariaDbServer, PgServer

from drills.api import RunOptions, RunResult, default_key_path, run_drill
from drills.aws.sweep import sweep
from drills.clock import FakeClock, iso
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import RunSummary, list_runs, read_events, state_home
from drills.keep import keep_state, kept_json
from drills.runbook import load_runbook
from drills.sweep import journal_removal, sweep_local
from validators.baseline import capture_baseline, write_baseline
from validators.connect import connect
from validators.endpoint import Endpoint, Engine, Secret
from validators.errors import ValidatorError

RESTORE_S = 1500  # 25 minutes "creating"
MODIFY_S = 90  # "resetting-master-credentials" after the password change
WRITER_S = 300  # an Aurora writer instance added to the restored cluster
CUSTOMERS, ORDERS, PAID = 40, 120, 90
RPO_LAG = timedelta(minutes=5)  # the newest row is this much older than the restore request / target


SCHEMA = {
    "postgres": [
        "create table customers (id bigint primary key, email text not null unique)",
        "create table orders (id bigint primary key, customer_id bigint not null references customers (id),"
        " status text not null, total numeric(10,2) not null, updated_at timestamptz not null)",
        "create index orders_customer_idx on orders (customer_id)",
        f"insert into customers select g, 'c' || g || '@example.com' from generate_series(1, {CUSTOMERS}) g",
        "insert into orders select g, 1 + mod(g, %(customers)s), case when mod(g, 4) = 0 then 'refunded'"
        " else 'paid' end, g * 1.5, %(newest)s - (%(orders)s - g) * interval '1 minute'"
        f" from generate_series(1, {ORDERS}) g",
    ],
    "mysql": [
        "create table customers (id bigint primary key, email varchar(200) not null unique) engine=InnoDB",
        "create table orders (id bigint primary key, customer_id bigint not null, status varchar(20) not null,"
        " total decimal(10,2) not null, updated_at datetime(6) not null, key orders_customer_idx (customer_id),"
        " constraint orders_customer_fk foreign key (customer_id) references customers (id)) engine=InnoDB",
        f"insert into customers select seq, concat('c', seq, '@example.com') from seq_1_to_{CUSTOMERS}",
        "insert into orders select seq, 1 + mod(seq, %(customers)s), if(mod(seq, 4) = 0, 'refunded', 'paid'),"
        f" seq * 1.5, %(newest)s - interval (%(orders)s - seq) minute from seq_1_to_{ORDERS}",
    ],
}


def reader_role(server: PgServer | MariaDbServer, name: str) -> dict[str, Any]:
    """What the local server says about the validators' role the drill created."""
    if isinstance(server, PgServer):
        rows = server.sql(
            "select rolsuper, rolcreaterole, rolcreatedb, coalesce(rolconfig, '{}'),"
            " array(select b.rolname::text from pg_roles b where pg_has_role(r.oid, b.oid, 'MEMBER')"
            " and b.oid <> r.oid order by 1) from pg_roles r where rolname = %s",
            (name,),
        )
        if not rows:
            return {}
        sup, createrole, createdb, config, member_of = rows[0]
        return {"superuser": sup or createrole or createdb, "config": list(config), "member_of": list(member_of)}
    rows = server.sql("select host from mysql.user where user = %s order by host", (name,))
    grants = server.sql("show grants for %s@'localhost'", (name,)) if rows else []
    return {"hosts": [r[0] for r in rows], "grants": [g[0] for g in grants]}


@dataclass
class LocalDb:
    """The "snapshot's" data on a real local server, reachable through a tunnel."""

    server: PgServer | MariaDbServer
    engine: Engine
    database: str
    master: str
    prod_password: str
    newest: datetime
    baseline: Path
    tunnel: Tunnel
    applied: list[str] = field(default_factory=list)  # every password the backend set, in order

    def master_endpoint(self, password: str) -> Endpoint:
        return Endpoint(self.engine, "127.0.0.1", self.tunnel.port, self.database, self.master, Secret(password))

    def apply_rds_passwords(self, session: Any) -> None:
        """Make the local master user take the password the backend sends to RDS, when RDS accepts it."""

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if "MasterUserPassword" in params:
                context["e2e_master_password"] = params["MasterUserPassword"]

        def apply(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            password = context.get("e2e_master_password")
            if password and "Error" not in parsed:
                set_master_password(self.server, self.master, password)
                self.applied.append(password)

        for op in ("ModifyDBInstance", "ModifyDBCluster"):
            session.events.register(f"before-parameter-build.rds.{op}", remember)
            session.events.register(f"after-call.rds.{op}", apply)


@contextlib.contextmanager
def local_db(server: PgServer | MariaDbServer, tmp_path: Path, newest: datetime, master: str) -> Iterator[LocalDb]:
    """A fresh database with the data, a master user with the production password, a tunnel to the server."""
    ep = server.new_database("snap")
    engine = ep.engine
    prod_password = secrets.token_urlsafe(18)
    set_master_password(server, master, prod_password, create=True)
    tunnel: Tunnel | None = None
    try:
        stamp = newest if engine == "postgres" else newest.astimezone(UTC).replace(tzinfo=None)
        execute(ep, SCHEMA[engine], {"newest": stamp, "customers": CUSTOMERS, "orders": ORDERS})
        baseline = write_baseline(capture_baseline(ep), tmp_path / "baseline.json")
        target = f"{ep.host}/.s.PGSQL.{ep.port}" if engine == "postgres" else str(ep.unix_socket)
        tunnel = Tunnel(target)
        yield LocalDb(server, engine, ep.database, master, prod_password, newest, baseline, tunnel)
    finally:
        if tunnel is not None:
            tunnel.close()
        server.drop_database(ep.database)
        drop_master(server, master)


# ---------------------------------------------------------------- moto sources


def moto_source(w: World, kind: str, engine: str, master: str) -> dict[str, Any]:
    """Create the production database (and its snapshot) in moto; the runbook's source fields for it."""
    rds = w.rds
    prod = {"MasterUsername": master, "MasterUserPassword": "prod-password-in-aws", "BackupRetentionPeriod": 7}
    versions = {"mariadb": "10.11.9", "mysql": "8.0.39", "postgres": "15.8"}
    if kind in ("rds-snapshot", "rds-pitr"):
        db = rds.create_db_instance(
            DBInstanceIdentifier=f"prod-{engine}",
            Engine=engine,
            EngineVersion=versions[engine],
            DBInstanceClass="db.t4g.micro",
            AllocatedStorage=20,
            DeletionProtection=True,  # restores inherit these in moto: the backend must enforce
            PubliclyAccessible=True,
            **prod,
        )["DBInstance"]
        if kind == "rds-snapshot":
            rds.create_db_snapshot(DBSnapshotIdentifier=f"prod-{engine}-snap", DBInstanceIdentifier=f"prod-{engine}")
            return {"snapshot": f"prod-{engine}-snap"}
        # moto's earliest restorable time is the instance's creation: restore to exactly then
        return {"source_instance": f"prod-{engine}", "target_time": db["InstanceCreateTime"].isoformat()}
    rds.create_db_cluster(DBClusterIdentifier=f"prod-{engine}", Engine=engine, DeletionProtection=True, **prod)
    if kind == "aurora-snapshot":
        rds.create_db_cluster_snapshot(
            DBClusterSnapshotIdentifier=f"prod-{engine}-snap", DBClusterIdentifier=f"prod-{engine}"
        )
        return {"snapshot": f"prod-{engine}-snap"}
    return {"source_cluster": f"prod-{engine}", "target_time": "latest"}


def write_runbook(
    path: Path, *, kind: str, engine: str, source: dict[str, Any], db: LocalDb, w: World, smoke_extra: Any = ()
) -> Path:
    doc = {
        "name": "orders-e2e",
        "source": {
            "kind": kind,
            "region": REGION,
            "engine": engine,
            "database": db.database,
            "isolation": isolation(w),
            **source,
        },
        "objectives": {"rto_seconds": 3600, "rpo_seconds": 900},
        "connect": {"host": "127.0.0.1", "port": db.tunnel.port},
        "validators": {
            "schema": {"baseline": str(db.baseline)},
            "row_counts": {"customers": {"equals": CUSTOMERS}, "orders": {"equals": ORDERS, "equals_baseline": True}},
            "smoke": [
                {"name": "paid orders", "sql": "select count(*) from orders where status = 'paid'", "expect": PAID},
                {
                    "name": "no orphan orders",
                    "sql": "select count(*) from orders o left join customers c on c.id = o.customer_id"
                    " where c.id is null",
                    "expect": 0,
                },
                *smoke_extra,
            ],
            "freshness": {"column": "orders.updated_at"},
        },
        "evidence": {"dir": str(path.parent / "evidence")},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def clock() -> FakeClock:
    # aligned with moto's wall clock: its restorable windows are real "now"
    return FakeClock(start=datetime.now(UTC))


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@dataclass
class Drilled:
    result: RunResult
    db: LocalDb
    fakes: Fakes
    statement: dict[str, Any]
    journal: str
    evidence_text: str

    @property
    def predicate(self) -> dict[str, Any]:
        p: dict[str, Any] = self.statement["predicate"]
        return p


def drill(
    request: pytest.FixtureRequest,
    cleanup: contextlib.ExitStack,
    session: Any,
    clock: FakeClock,
    tmp_path: Path,
    kind: str,
    engine: str,
    *,
    smoke_extra: Any = (),
    throttle: float = 0.0,
    apply_passwords: bool = True,
    keep_seconds: int | None = None,
) -> Drilled:
    """Production in moto, its data on a local server, one `run_drill`; the verified evidence."""
    server_fixture = "pg_server" if "postgres" in engine else "mariadb_server"
    server: PgServer | MariaDbServer = request.getfixturevalue(server_fixture)
    w = make_world(session, rds=False)
    master = "adm_" + secrets.token_hex(4)
    source = moto_source(w, kind, engine, master)
    target = source.get("target_time")
    # the data as it was at the PITR target, or at the snapshot: its newest commit RPO_LAG earlier
    newest = (datetime.fromisoformat(target) if target and target != "latest" else clock.now()) - RPO_LAG
    db = cleanup.enter_context(local_db(server, tmp_path, newest, master))
    fakes = Fakes(
        clock, restore_seconds=RESTORE_S, modify_seconds=MODIFY_S, create_seconds=WRITER_S, throttle_rate=throttle
    ).install(session)
    if apply_passwords:
        db.apply_rds_passwords(session)
    runbook = write_runbook(
        tmp_path / "runbook.yaml", kind=kind, engine=engine, source=source, db=db, w=w, smoke_extra=smoke_extra
    )
    result = run_drill(load_runbook(runbook), RunOptions(clock=clock, aws_session=session, keep_seconds=keep_seconds))
    assert result.evidence is not None, result.error
    if keep_seconds is None:  # nothing left behind in AWS, whatever the verdict
        assert drill_leftovers(session) == []
    verifiers = load_verifiers(default_key_path().with_suffix(".pub"))
    statement = read_and_verify(result.evidence, verifiers)
    journal = (state_home() / "runs" / result.run_id / "journal.jsonl").read_text()
    return Drilled(result, db, fakes, statement, journal, result.evidence.read_text())


# ---------------------------------------------------------------- assertions


def assert_no_secret(d: Drilled) -> None:
    assert d.db.applied, "the backend never set a password"
    texts = {
        "evidence": d.evidence_text,
        "journal": d.journal,
        "result": json.dumps(d.result.to_json(), default=str),
    }
    for secret in [*d.db.applied, d.db.prod_password]:
        for where, text in texts.items():
            assert secret not in text, f"a password leaked into the {where}"


def assert_torn_down(d: Drilled, aurora: bool) -> None:
    td = d.predicate["teardown"]
    assert td["all_deleted"] is True and td["kept_until_expiry"] is False
    kinds = [r["kind"] for r in td["resources"]]
    want = ["rds-instance", "rds-cluster"] if aurora else ["rds-instance"]
    assert kinds == [*want, "rds-subnet-group", "ec2-security-group", "scratch-dir"]
    assert all(r["deleted"] and r["verified_at"] for r in td["resources"])
    events = [json.loads(line) for line in d.journal.splitlines()]
    removed = [e["resource"]["id"] for e in events if e["event"] == "resource_removed"]
    assert removed == [r["id"] for r in td["resources"]]
    assert events[-1]["event"] == "run_finished" and events[-1]["exit_code"] == d.result.exit_code


# ---------------------------------------------------------------- the drills

CASES = [
    pytest.param("rds-snapshot", "postgres", id="rds-snapshot-postgres"),
    pytest.param("rds-pitr", "postgres", id="rds-pitr-postgres"),
    pytest.param("aurora-snapshot", "aurora-postgresql", id="aurora-snapshot-aurora-postgresql"),
    pytest.param("rds-snapshot", "mysql", id="rds-snapshot-mysql"),
    pytest.param("rds-snapshot", "mariadb", id="rds-snapshot-mariadb"),
    pytest.param("aurora-pitr", "aurora-mysql", id="aurora-pitr-aurora-mysql"),
]


@pytest.mark.parametrize(("kind", "engine"), CASES)
def test_drill_validates_real_data_behind_the_restored_endpoint(
    request: pytest.FixtureRequest,
    session: Any,
    clock: FakeClock,
    tmp_path: Path,
    cleanup: contextlib.ExitStack,
    kind: str,
    engine: str,
) -> None:
    aurora = kind.startswith("aurora")
    d = drill(request, cleanup, session, clock, tmp_path, kind, engine, throttle=0.1 if aurora else 0.0)
    r, p = d.result, d.predicate

    assert (r.verdict, r.exit_code, r.error, r.failed_state) == ("passed", 0, None, None)
    assert p["results"]["verdict"] == "passed" and p["error"] is None

    # the validators ran for real, on the local server, through the tunnel
    assert d.db.tunnel.connections >= 2  # the connect probe and the validators
    findings = {(f["validator"], f["check"]): f for f in r.findings}
    assert all(f["passed"] for f in r.findings), [f for f in r.findings if not f["passed"]]
    assert {v for v, _ in findings} == {"session", "schema", "row_counts", "smoke", "freshness"}
    assert findings[("row_counts", "customers rows")]["actual"] == CUSTOMERS
    assert findings[("row_counts", "orders rows")]["actual"] == ORDERS
    assert findings[("smoke", "paid orders")]["actual"] == PAID
    newest = findings[("freshness", "newest commit")]["actual"]
    assert datetime.fromisoformat(newest.replace("Z", "+00:00")) == d.db.newest
    assert p["validation"]["passed"] is True
    version = p["server_version"]
    assert ("MariaDB" in version) if "postgres" not in engine else version.startswith("15.")

    # credentials: exactly one fresh password, applied to the local master user; the old one is dead
    assert len(d.db.applied) == 1 and len(d.db.applied[0]) >= 32
    assert d.db.applied[0] != d.db.prod_password
    with pytest.raises(ValidatorError):
        connect(d.db.master_endpoint(d.db.prod_password)).close()
    assert d.fakes.count("ModifyDBCluster" if aurora else "ModifyDBInstance") >= 1

    # the endpoint AWS reported, reached through the connect override
    ep = p["endpoint"]
    assert ep["host"].endswith(".us-east-1.rds.amazonaws.com") and ep["host"].startswith("drill-orders-e2e-")
    assert ep["port"] == (5432 if "postgres" in engine else 3306)
    assert ep["connected_via"] == {"host": "127.0.0.1", "port": d.db.tunnel.port}
    assert ep["database"] == d.db.database

    # the validators ran as a read-only role the drill created with the master password, never as the master
    reader = ep["user"]
    assert reader.startswith("drill_reader_") and reader != d.db.master
    session = findings[("session", "validators' role is read-only")]
    assert session["passed"] and session["actual"]["role"].split("@")[0] == reader
    assert session["actual"]["transaction_read_only"] in ("on", 1)
    role = reader_role(d.db.server, reader)
    if "postgres" in engine:
        assert role == {
            "superuser": False,
            "config": ["default_transaction_read_only=on"],
            "member_of": ["pg_read_all_data"],
        }
    else:
        assert role["hosts"] == ["%", "localhost"]
        assert role["grants"][0].startswith(f"GRANT SELECT, SHOW VIEW ON *.* TO `{reader}`@`localhost`")
    assert p["target"]["endpoint"]["address"] == ep["host"]

    # isolation proven before and after the restore
    checks = p["isolation_checks"]
    assert checks and all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    assert {"drill-sg-only-runner-ingress"} <= {c["check"] for c in checks}
    assert p["target"]["publicly_accessible"] is False and p["target"]["deletion_protection"] is False

    # marks and time: the drill waited the injected (fake) restore, not less
    marks = [m["name"] for m in p["marks"]]
    assert {"restore-requested", "instance-available", "credentials-applied"} <= set(marks)
    if aurora:
        assert marks.index("cluster-available") < marks.index("instance-available")
    phases = p["results"]["rto_phases_ms"]
    waited = RESTORE_S + MODIFY_S + (WRITER_S if aurora else 0)
    slack = 3 * 165 + 120  # poll intervals (<= 150 s + jitter) and throttling backoff
    assert waited * 1000 <= phases["await_ready"] <= (waited + slack) * 1000, phases
    assert r.rto_seconds is not None and waited <= r.rto_seconds <= 3600
    assert p["results"]["rto_met"] is True
    # RPO: the newest surviving commit against the target (PITR) or the restore request (snapshot)
    assert r.rpo_seconds is not None
    assert r.drill.measurement is not None
    if kind.endswith("-pitr") and r.drill.measurement.rpo_method == "target":
        assert r.rpo_seconds == RPO_LAG.total_seconds()
    else:
        assert r.drill.measurement.rpo_method == "request"
        assert RPO_LAG.total_seconds() <= r.rpo_seconds < RPO_LAG.total_seconds() + 60
    assert p["results"]["rpo_met"] is True

    assert_torn_down(d, aurora)
    assert_no_secret(d)


def test_failing_validation_still_tears_down_and_signs(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, session: Any, clock: FakeClock, tmp_path: Path
) -> None:
    impossible = {"name": "lost orders", "sql": "select count(*) from orders where status = 'lost'", "expect": 1}
    d = drill(request, cleanup, session, clock, tmp_path, "rds-snapshot", "postgres", smoke_extra=[impossible])
    r, p = d.result, d.predicate

    assert (r.verdict, r.exit_code) == ("failed", 1)
    assert p["results"]["verdict"] == "failed" and p["results"]["rto_met"] is False
    failed = [f for f in r.findings if not f["passed"]]
    assert [(f["validator"], f["check"], f["actual"]) for f in failed] == [("smoke", "lost orders", 0)]
    assert [x["kind"] for x in p["deviations"]] == ["finding_failed"]
    # everything else was checked, against real data
    assert sum(f["passed"] for f in r.findings) == len(r.findings) - 1
    assert next(f for f in r.findings if f["check"] == "orders rows")["actual"] == ORDERS

    assert_torn_down(d, aurora=False)
    assert_no_secret(d)


def test_credentials_the_database_refuses_fail_at_connect_without_retrying(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, session: Any, clock: FakeClock, tmp_path: Path
) -> None:
    # the local "restored" database never learns the password the backend set
    d = drill(request, cleanup, session, clock, tmp_path, "rds-snapshot", "postgres", apply_passwords=False)
    r = d.result
    assert (r.verdict, r.exit_code, r.failed_state) == ("failed", 3, "connect")
    assert "refused the credentials" in (r.error or "")
    assert [e.outcome for e in r.drill.timeline if e.state == "connect"] == ["error"]  # one attempt, no retries
    assert_torn_down(d, aurora=False)


def test_keep_lasts_exactly_its_ttl_after_the_drill_and_the_sweep_is_journaled(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, session: Any, clock: FakeClock, tmp_path: Path
) -> None:
    # a 25-minute restore kept for one hour: the hour starts when the drill passed, not at the restore request
    d = drill(request, cleanup, session, clock, tmp_path, "rds-snapshot", "postgres", keep_seconds=3600)
    r = d.result
    assert (r.verdict, r.exit_code) == ("passed", 0)
    ended = clock.now()
    kept = kept_json(r.drill)
    assert kept is not None
    assert kept["expires_at"] == iso(ended + timedelta(hours=1))
    assert {x["kind"] for x in kept["resources"]} == {
        "ec2-security-group",
        "rds-subnet-group",
        "rds-instance",
        "scratch-dir",
    }
    assert kept["endpoint"]["host"].startswith("drill-orders-e2e-") and kept["expires_at"] in kept["connect"]
    assert d.db.applied[0] not in json.dumps(kept)
    assert d.predicate["teardown"]["kept_until_expiry"] is True
    assert len(drill_leftovers(session)) == 3

    def runs_entry() -> RunSummary:
        return next(x for x in list_runs() if x.run_id == r.run_id)

    assert len(runs_entry().outstanding) == 4 and runs_entry().kept
    scratch = Path(next(x["id"] for x in kept["resources"] if x["kind"] == "scratch-dir"))
    assert scratch.is_dir()

    clock.advance(3600 - 60)
    early = sweep(session, timedelta(hours=6), False, lambda _r: False, clock)
    assert {x["action"] for x in early} == {"kept"} and len(drill_leftovers(session)) == 3
    assert {x["action"] for x in sweep_local(timedelta(hours=6), False, clock)} == {"kept"}

    clock.advance(120)
    late = sweep(
        session, timedelta(hours=6), False, lambda _r: False, clock, on_deleted=lambda x: journal_removal(x, clock)
    )
    assert {x["action"] for x in late} == {"deleted"} and drill_leftovers(session) == []
    # the run's journal knows: drill runs lists only the local scratch directory now
    assert [x.kind for x in runs_entry().outstanding] == ["scratch-dir"]
    local = sweep_local(timedelta(hours=6), False, clock)
    assert [(x["kind"], x["action"]) for x in local] == [("scratch-dir", "deleted")]
    assert runs_entry().outstanding == [] and not scratch.exists()
    journal = state_home() / "runs" / r.run_id / "journal.jsonl"
    swept = keep_state(read_events(journal)).swept
    assert sorted(x["kind"] for x in swept) == ["ec2-security-group", "rds-instance", "rds-subnet-group", "scratch-dir"]


def test_a_kept_copy_swept_from_another_machine_is_finished_by_the_local_sweep(
    request: pytest.FixtureRequest, cleanup: contextlib.ExitStack, session: Any, clock: FakeClock, tmp_path: Path
) -> None:
    d = drill(request, cleanup, session, clock, tmp_path, "rds-snapshot", "postgres", keep_seconds=600)
    assert d.result.verdict == "passed"
    run_id = d.result.run_id
    clock.advance(601)
    # another runner's sweep deleted the AWS resources: this machine's journal still lists them
    assert {x["action"] for x in sweep(session, timedelta(hours=6), False, lambda _r: False, clock)} == {"deleted"}
    entry = next(x for x in list_runs() if x.run_id == run_id)
    assert len(entry.outstanding) == 4
    # without an AWS sweep of its own, this machine does not guess
    held = sweep_local(timedelta(hours=6), False, clock)
    assert {x["action"] for x in held} == {"kept"} and all("AWS was not swept" in x["detail"] for x in held)
    # after one (that saw nothing left), the run's own teardown confirms every resource gone
    done = sweep_local(timedelta(hours=6), False, clock, aws_records=[])
    assert sorted((x["kind"], x["action"]) for x in done) == [
        ("ec2-security-group", "deleted"),
        ("rds-instance", "deleted"),
        ("rds-subnet-group", "deleted"),
        ("scratch-dir", "deleted"),
    ]
    assert next(x for x in list_runs() if x.run_id == run_id).outstanding == []
    journal = read_events(state_home() / "runs" / run_id / "journal.jsonl")
    absent = [
        e["detail"] for e in journal if e["event"] == "resource_removed" and e["resource"]["kind"] != "scratch-dir"
    ]
    assert absent == ["already absent"] * 3
