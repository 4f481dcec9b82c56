"""RDS drills against moto, with injected time, phases, throttling and faults.

Whole drills run through the real machine (``run_drill`` → ``run_machine``) on the fake clock, their
validators against a real local PostgreSQL behind the endpoint moto reports (``plane``, tests/dataplane.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.aws.calls import TAG_EXPIRES, TAG_RUN_ID, tag_value
from drills.aws.rds_declaration import RdsPitrSource, RdsSnapshotSource
from drills.aws.sweep import sweep
from drills.backends import backend_factory
from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, IsolationError, PreflightError, RestoreFailed, TeardownError
from drills.journal import state_home
from drills.resources import Resource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import (
    REGION,
    Fakes,
    Outcome,
    World,
    ctx,
    drill_leftovers,
    isolation,
    machine_drill,
    make_world,
    settings,
)
from dataplane import ROWS, PgPlane


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session(aws: None) -> Any:
    return boto3.Session(region_name=REGION)


@pytest.fixture
def world(session: Any) -> World:
    return make_world(session)


def snap_source(w: World, **kw: Any) -> RdsSnapshotSource:
    fields: dict[str, Any] = {
        "kind": "rds-snapshot",
        "region": REGION,
        "engine": "postgres",
        "snapshot": w.snapshot,
        "database": "orders",
        "isolation": isolation(w),
    }
    fields.update(kw)
    return RdsSnapshotSource.model_validate(fields)


def backend(source: Any, session: Any, clock: FakeClock, **kw: Any) -> Any:
    return backend_factory("rds")(source, settings(session, clock, **kw))


def run(world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path) -> Outcome:
    """A snapshot drill of the world's instance through the machine, validated on the plane's data."""
    return machine_drill(
        backend(snap_source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
    )


def test_snapshot_drill_end_to_end(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    fakes = Fakes(clock, restore_seconds=1800, modify_seconds=120).install(session)
    b = backend(snap_source(world, database=plane.database), session, clock)
    out = machine_drill(b, session, clock, plane, tmp_path)
    assert out.error is None, out.error
    assert out.result is not None and (out.result.verdict, out.result.exit_code) == ("passed", 0)
    assert [r.kind for r in out.registry] == ["ec2-security-group", "rds-subnet-group", "rds-instance"]
    assert all(r.id.startswith("drill-orders-") for r in out.registry)
    ep = out.endpoint
    assert ep is not None and ep.password is not None
    assert ep.engine == "postgres" and ep.database == plane.database and ep.user == "app_admin"
    assert ep.host.startswith(b.instance_id) and ep.port == 5432
    assert ep.password is not None and "****" in repr(ep.password) and len(ep.password.reveal()) >= 32
    names = [m.name for m in out.marks]
    assert names == ["restore-requested", "instance-available", "credentials-applied"]
    # the validators really ran on the data behind the endpoint, with the one password the backend set
    assert plane.applied == [ep.password.reveal()] and plane.tunnel.connections >= 2
    assert [(f["check"], f["actual"]) for f in out.result.findings if f["validator"] == "row_counts"] == [
        ("orders rows", ROWS)
    ]
    # the 30-minute restore is in the measured RTO
    assert out.result.rto_seconds is not None and 1800 + 120 <= out.result.rto_seconds < 1800 + 120 + 2 * 165
    # enforced despite moto copying the public, protected source
    facts = {(f["check"], f["subject"]): f["passed"] for f in out.isolation}
    assert facts[("not-publicly-accessible", b.instance_id)] is True
    assert all(f["passed"] for f in out.isolation)
    # proven before the restore (the network, then the drill's own security group) and on what AWS reports after it
    assert {"no-egress-route", "drill-sg-only-runner-ingress", "drill-security-groups"} <= {c for c, _ in facts}
    tf = b.target_facts()
    assert tf["publicly_accessible"] is False and tf["deletion_protection"] is False
    assert tf["backup_retention_days"] == 0
    # everything gone, source intact
    assert [t.deleted for t in out.teardown] == [True, True, True]
    assert drill_leftovers(session) == []
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]
    # a 30-minute restore stays cheap (sleeps: the backend's polls, none above its 150 s cap plus jitter)
    assert fakes.count("DescribeDBInstances") < 60
    assert clock.sleeps and max(clock.sleeps) <= 150 * 1.1 + 1e-9


def no_restore_calls(fakes: Fakes) -> bool:
    return not [c for c in fakes.calls if c.startswith(("Restore", "Create", "Authorize", "Modify", "Delete"))]


def test_pitr_window_checked_in_preflight(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    fakes = Fakes(clock).install(session)
    latest = world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"][0][
        "LatestRestorableTime"
    ]
    base = {
        "kind": "rds-pitr",
        "region": REGION,
        "engine": "postgres",
        "source_instance": world.source_instance,
        "database": plane.database,
    }
    for target, problem in ((latest + timedelta(hours=1), "after the latest"), (latest - timedelta(days=30), "before")):
        src = RdsPitrSource.model_validate({**base, "target_time": target, "isolation": isolation(world)})
        with pytest.raises(PreflightError, match=problem):
            backend(src, session, clock).preflight(ctx(clock, []))
    src = RdsPitrSource.model_validate({**base, "target_time": "latest", "isolation": isolation(world)})
    b = backend(src, session, clock)
    report = b.preflight(ctx(clock, []))
    assert report.recovery_point["kind"] == "pitr" and report.recovery_point["target_time"] == "latest"
    assert report.recovery_point["earliest_restorable_time"] <= report.recovery_point["latest_restorable_time"]
    assert report.source["account"] == "123456789012" and report.source["identifier"] == world.source_instance
    assert no_restore_calls(fakes)
    out = machine_drill(b, session, clock, plane, tmp_path)
    assert out.error is None and out.verdict == "passed" and drill_leftovers(session) == []
    assert "RestoreDBInstanceToPointInTime" in fakes.calls


def test_latest_snapshot_of_picks_newest_available(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    world.rds.create_db_snapshot(DBSnapshotIdentifier="newer", DBInstanceIdentifier=world.source_instance)
    src = snap_source(world, snapshot=None, latest_snapshot_of=world.source_instance, snapshot_type="manual")
    report = backend(src, session, clock).preflight(ctx(clock, []))
    assert report.recovery_point["snapshot_id"] == "newer"


def test_throttled_restore_is_retried_on_the_clock(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    from unittest import mock

    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    real = RDSBackend.restore_db_instance_from_db_snapshot
    calls = {"n": 0}

    def throttled_once(self: Any, *a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RDSClientError("Throttling", "Rate exceeded")
        return real(self, *a, **k)

    Fakes(clock, throttle_rate=0.2).install(session)
    with mock.patch.object(RDSBackend, "restore_db_instance_from_db_snapshot", throttled_once):
        out = machine_drill(
            backend(snap_source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
        )
    assert out.error is None, out.error
    assert out.verdict == "passed"
    assert calls["n"] == 2
    assert drill_leftovers(session) == []


def test_terminal_state_fails_fast_and_cleans_up(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock, restore_seconds=600, terminal_status="incompatible-restore").install(session)
    out = machine_drill(
        backend(snap_source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
    )
    assert out.result is not None and (out.result.failed_state, out.result.exit_code) == ("await_ready", 3)
    assert isinstance(out.error, RestoreFailed) and "incompatible-restore" in str(out.error)
    assert clock.monotonic_ns() / 1e9 < 3600  # did not wait for the deadline
    assert out.teardown_errors == [] and drill_leftovers(session) == []


def test_deadline_exceeded_while_creating(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock, restore_seconds=10 * 3600).install(session)
    b = backend(snap_source(world, database=plane.database), session, clock)
    out = machine_drill(b, session, clock, plane, tmp_path, deadline_seconds=3600)
    assert isinstance(out.error, DeadlineExceeded)
    assert out.result is not None and out.result.failed_state == "await_ready"
    await_ready = next(e for e in out.result.drill.timeline if e.state == "await_ready")
    assert 3600 - 165 <= await_ready.duration_ms / 1000 <= 3600  # waited until the deadline, not the 10 h
    assert drill_leftovers(session) == []


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("igw", "internet gateway"),
        ("nat", "NAT gateway"),
        ("pcx", "VPC peering"),
        ("eni", "network interface"),
    ],
)
def test_routes_out_of_the_vpc_are_refused(
    world: World, session: Any, clock: FakeClock, route: str, reason: str, plane: PgPlane, tmp_path: Path
) -> None:
    ec2 = world.ec2
    if route == "igw":
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=world.vpc_id)
        target = {"GatewayId": igw}
    elif route == "nat":
        eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = ec2.create_nat_gateway(SubnetId=world.subnet_ids[0], AllocationId=eip)["NatGateway"]["NatGatewayId"]
        target = {"NatGatewayId": nat}
    elif route == "pcx":
        other = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        pcx = ec2.create_vpc_peering_connection(VpcId=world.vpc_id, PeerVpcId=other)["VpcPeeringConnection"]
        target = {"VpcPeeringConnectionId": pcx["VpcPeeringConnectionId"]}
    else:
        eni = ec2.create_network_interface(SubnetId=world.subnet_ids[0])["NetworkInterface"]["NetworkInterfaceId"]
        target = {"NetworkInterfaceId": eni}
    ec2.create_route(RouteTableId=world.private_rtb, DestinationCidrBlock="0.0.0.0/0", **target)
    fakes = Fakes(clock).install(session)
    out = machine_drill(
        backend(snap_source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
    )
    assert isinstance(out.error, IsolationError) and reason in str(out.error)
    assert out.result is not None and (out.result.failed_state, out.result.exit_code) == ("preflight", 3)
    assert no_restore_calls(fakes) and out.registry == []
    # the same route, reviewed and listed, is accepted
    allowed = isolation(world, allowed_routes=[f"{world.private_rtb}:0.0.0.0/0"])
    ok = backend(snap_source(world, isolation=allowed), session, clock, run_id="run-0002")
    report = ok.preflight(ctx(clock, []))
    assert any("(allowed)" in f.detail for f in report.plan.facts)
    assert any("(allowed)" in f["detail"] for f in report.facts["isolation"])


def test_main_route_table_applies_to_unassociated_subnets(world: World, session: Any, clock: FakeClock) -> None:
    ec2 = world.ec2
    subnet = ec2.create_subnet(VpcId=world.vpc_id, CidrBlock="10.0.3.0/24", AvailabilityZone="us-east-1c")
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.create_route(RouteTableId=world.main_rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    Fakes(clock).install(session)
    iso_cfg = isolation(world)
    iso_cfg["subnet_ids"] = [*world.subnet_ids, subnet["Subnet"]["SubnetId"]]
    with pytest.raises(IsolationError, match=r"\(main\): routes leave the VPC"):
        backend(snap_source(world, isolation=iso_cfg), session, clock).preflight(ctx(clock, []))


def test_named_security_group_open_to_the_world_is_refused(world: World, session: Any, clock: FakeClock) -> None:
    sg = world.ec2.create_security_group(GroupName="open", Description="x", VpcId=world.vpc_id)["GroupId"]
    world.ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    Fakes(clock).install(session)
    iso_cfg = {"subnet_ids": world.subnet_ids, "security_group_ids": [sg]}
    with pytest.raises(IsolationError, match="open to the world"):
        backend(snap_source(world, isolation=iso_cfg), session, clock).preflight(ctx(clock, []))


def test_public_restored_instance_is_refused(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock, always_public=True).install(session)
    out = machine_drill(
        backend(snap_source(world, database=plane.database), session, clock), session, clock, plane, tmp_path
    )
    assert out.endpoint is None and plane.tunnel.connections == 0  # refused before anything connected
    assert isinstance(out.error, IsolationError) and "PubliclyAccessible=True" in str(out.error)
    assert out.result is not None and (out.result.failed_state, out.result.exit_code) == ("await_ready", 3)
    # the refusal is in the evidence: the checks proven before the restore, and the one AWS's report failed
    failed = [(f["check"], f["detail"]) for f in out.isolation if not f["passed"]]
    assert failed == [("not-publicly-accessible", "PubliclyAccessible=True")]
    assert {"no-egress-route", "drill-sg-only-runner-ingress"} <= {f["check"] for f in out.isolation if f["passed"]}
    assert drill_leftovers(session) == []


def test_teardown_refuses_look_alikes(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    b = backend(snap_source(world), session, clock)
    rds = world.rds
    common = {"Engine": "postgres", "DBInstanceClass": "db.t4g.micro", "MasterUsername": "u", "AllocatedStorage": 20}
    rds.create_db_instance(DBInstanceIdentifier=b.instance_id, MasterUserPassword="password1", **common)
    rds.create_db_instance(
        DBInstanceIdentifier="drill-orders-other",
        MasterUserPassword="password1",
        Tags=[{"Key": TAG_RUN_ID, "Value": "someone-else"}],
        **common,
    )
    attrs = {"region": REGION, "run_id": "run-0001"}
    for ident, problem in (
        (b.instance_id, "tag is None"),
        ("drill-orders-other", "'someone-else'"),
        (world.source_instance, "prefix"),
    ):
        with pytest.raises(TeardownError, match=problem):
            b.teardown(Resource("rds-instance", ident, "rds", attrs), ctx(clock, []))
    with pytest.raises(TeardownError, match="recorded for run"):
        b.teardown(Resource("rds-instance", b.instance_id, "rds", {**attrs, "run_id": "x"}), ctx(clock, []))
    left = {d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]}
    assert {b.instance_id, "drill-orders-other", world.source_instance} <= left


def test_teardown_from_the_record_alone_is_idempotent(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock).install(session)
    src = snap_source(world, database=plane.database)
    out = machine_drill(backend(src, session, clock), session, clock, plane, tmp_path, killed_at_teardown=True)
    assert out.result is None and out.error is None and len(drill_leftovers(session)) == 3
    rebuilt = backend(src, session, clock)  # as after a crash: a new backend, the journal's records only
    records = list(reversed(out.registry))
    first = [rebuilt.teardown(r, ctx(clock, [])).detail for r in records]
    again = [rebuilt.teardown(r, ctx(clock, [])).detail for r in records]
    assert first == ["deleted"] * 3 and again == ["already absent"] * 3
    assert drill_leftovers(session) == []


def test_preflight_refusals(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock, quota=(40, 40)).install(session)
    with pytest.raises(PreflightError, match="quota DBInstances exhausted"):
        backend(snap_source(world), session, clock).preflight(ctx(clock, []))
    fakes.quota = (1, 40)
    with pytest.raises(PreflightError, match="not found"):
        backend(snap_source(world, snapshot="nope"), session, clock).preflight(ctx(clock, []))
    with pytest.raises(PreflightError, match="the backup is postgres"):
        backend(snap_source(world, engine="mysql"), session, clock).preflight(ctx(clock, []))
    b = backend(snap_source(world), session, clock)
    world.ec2.create_security_group(GroupName=b.sg_name, Description="x", VpcId=world.vpc_id)
    with pytest.raises(PreflightError, match="is taken"):
        b.preflight(ctx(clock, []))
    assert no_restore_calls(fakes)


def test_kms_access_denied_is_a_clear_preflight_error(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock, fail_ops={"DescribeKey": "AccessDeniedException"}).install(session)
    key = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"

    def encrypted(parsed: dict[str, Any], **_: Any) -> None:
        for s in parsed.get("DBSnapshots", []):
            s["Encrypted"], s["KmsKeyId"] = True, key

    session.events.register("after-call.rds.DescribeDBSnapshots", encrypted)
    with pytest.raises(PreflightError, match="missing KMS key access"):
        backend(snap_source(world), session, clock).preflight(ctx(clock, []))
    assert no_restore_calls(fakes)


def test_available_mark_uses_rds_event_inside_the_poll_window(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    fakes = Fakes(clock, restore_seconds=3600).install(session)
    truth = clock.now() + timedelta(seconds=3600)
    fakes.events = [{"Message": "Restored from snapshot prod-db-snap", "Date": truth, "SourceIdentifier": "x"}]
    out = run(world, session, clock, plane, tmp_path)
    mark = next(m for m in out.marks if m.name == "instance-available")
    assert mark.source == "rds-event" and mark.at.startswith(truth.isoformat()[:19])


def test_incident_mode_tags_and_hint(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock).install(session)
    b = backend(snap_source(world, database=plane.database), session, clock, keep_seconds=3 * 86400)
    out = machine_drill(b, session, clock, plane, tmp_path, keep_seconds=3 * 86400)
    assert out.error is None and out.verdict == "passed"
    assert out.teardown == [] and out.result is not None and out.result.drill.teardown_results == []
    db = world.rds.describe_db_instances(DBInstanceIdentifier=b.instance_id)["DBInstances"][0]
    expires = tag_value(db["TagList"], TAG_EXPIRES)
    assert expires is not None and expires.startswith("2026-01-04")
    assert "2026-01-04" in b.connection_hint()
    assert b.instance_id in b.connection_hint() and "ssm start-session" in b.connection_hint()
    assert "password" not in b.connection_hint().lower().replace("reset the password", "")
    # the sweeper keeps it until expiry, then removes it
    kept = sweep(session, timedelta(hours=6), False, lambda _: False, clock)
    assert {r["action"] for r in kept} == {"kept"} and len(drill_leftovers(session)) == 3
    clock.advance(3 * 86400 + 1)
    gone = sweep(session, timedelta(hours=6), False, lambda _: False, clock)
    assert {r["action"] for r in gone} == {"deleted"} and drill_leftovers(session) == []


def test_iam_auth_uses_tokens_not_passwords_and_never_sends_one_in_clear_text(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    fakes = Fakes(clock).install(session)
    src = snap_source(world, iam_auth=True, master_username="drill_reader", database=plane.database)
    out = machine_drill(backend(src, session, clock), session, clock, plane, tmp_path)
    ep = out.endpoint
    assert ep is not None and ep.password is not None and not ep.admin
    assert "X-Amz-Signature" in ep.password.reveal() and ep.user == "drill_reader"
    assert ep.options["auth"] == "iam"
    # the local data plane has no TLS: the token is refused to it, never sent, and the drill fails at connect
    assert out.result is not None and (out.result.failed_state, out.result.exit_code) == ("connect", 3)
    assert "SSL" in (out.result.error or ""), out.result.error
    assert plane.applied == []  # no password was set
    assert "credentials-applied" in [m.name for m in out.marks]
    assert fakes.count("ModifyDBInstance") == 1  # enforcement only (public/protected/backups), no password


def test_sweep_removes_crashed_runs_only(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    Fakes(clock).install(session)
    src = snap_source(world, database=plane.database)
    crashed = backend(src, session, clock, run_id="crashed")
    live = backend(src, session, clock, run_id="live", runbook="billing")
    assert machine_drill(crashed, session, clock, plane, tmp_path, killed_at_teardown=True).error is None
    assert machine_drill(live, session, clock, plane, tmp_path, killed_at_teardown=True).error is None
    assert len(drill_leftovers(session)) == 6
    clock.advance(7 * 3600)
    preview = sweep(session, timedelta(hours=6), True, lambda r: r == "live", clock)
    assert {(r["run_id"], r["action"]) for r in preview} == {("crashed", "would-delete"), ("live", "kept")}
    assert len(drill_leftovers(session)) == 6
    done = sweep(session, timedelta(hours=6), False, lambda r: r == "live", clock)
    assert sorted(r["action"] for r in done) == ["deleted"] * 3 + ["kept"] * 3
    assert all(x.startswith("drill-billing-") for x in drill_leftovers(session))
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]


def test_password_never_reaches_logs_or_facts(
    world: World, session: Any, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    from structlog.testing import capture_logs

    Fakes(clock, modify_seconds=30).install(session)
    b = backend(snap_source(world, database=plane.database), session, clock)
    with capture_logs() as logs:
        out = machine_drill(b, session, clock, plane, tmp_path)
    assert out.endpoint is not None and out.endpoint.password is not None and out.result is not None
    secret = out.endpoint.password.reveal()
    assert plane.applied == [secret] and out.result.verdict == "passed"  # the password really was used
    assert out.result.evidence is not None and secret not in out.result.evidence.read_text()
    journal = state_home() / "runs" / out.result.run_id / "journal.jsonl"
    assert secret not in journal.read_text()
    assert logs and secret not in repr(logs)
    assert secret not in repr(out.isolation) + repr(b.target_facts()) + b.connection_hint()
    assert secret not in repr(out.registry) + repr(out.marks) + repr(out.endpoint.public())
