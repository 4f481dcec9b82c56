"""RDS drills against moto, with injected time, phases, throttling and faults."""

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
from drills.aws.sweep import sweep
from drills.backends import backend_factory
from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, IsolationError, PreflightError, RestoreFailed, TeardownError
from drills.resources import Resource
from drills.sources import RdsPitrSource, RdsSnapshotSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import (
    REGION,
    Fakes,
    World,
    ctx,
    drill_leftovers,
    drive,
    isolation,
    keep_all,
    make_world,
    settings,
)


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


def test_snapshot_drill_end_to_end(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock, restore_seconds=1800, modify_seconds=120).install(session)
    b = backend(snap_source(world), session, clock)
    out = drive(b, clock)
    assert out.error is None, out.error
    assert [r.kind for r in out.registry] == ["ec2-security-group", "rds-subnet-group", "rds-instance"]
    assert all(r.id.startswith("drill-orders-") for r in out.registry)
    ep = out.endpoint
    assert ep.engine == "postgres" and ep.database == "orders" and ep.user == "app_admin"
    assert ep.host.startswith(b.instance_id) and ep.port == 5432
    assert ep.password is not None and "****" in repr(ep.password) and len(ep.password.reveal()) >= 32
    names = [m.name for m in out.marks]
    assert names == ["restore-requested", "instance-available", "credentials-applied"]
    # enforced despite moto copying the public, protected source
    facts = {(f["check"], f["subject"]): f["passed"] for f in b.isolation_facts()}
    assert facts[("not-publicly-accessible", b.instance_id)] is True
    assert all(f["passed"] for f in b.isolation_facts())
    tf = b.target_facts()
    assert tf["publicly_accessible"] is False and tf["deletion_protection"] is False
    assert tf["backup_retention_days"] == 0
    # everything gone, source intact
    assert [t.deleted for t in out.teardown] == [True, True, True]
    assert drill_leftovers(session) == []
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]
    # a 30-minute restore stays cheap
    assert fakes.count("DescribeDBInstances") < 60
    assert clock.sleeps and max(clock.sleeps) <= 150 * 1.1 + 1e-9


def no_restore_calls(fakes: Fakes) -> bool:
    return not [c for c in fakes.calls if c.startswith(("Restore", "Create", "Authorize", "Modify", "Delete"))]


def test_pitr_window_checked_in_preflight(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock).install(session)
    latest = world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"][0][
        "LatestRestorableTime"
    ]
    base = {"kind": "rds-pitr", "region": REGION, "engine": "postgres", "source_instance": world.source_instance}
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
    out = drive(b, clock)
    assert out.error is None and drill_leftovers(session) == []
    assert "RestoreDBInstanceToPointInTime" in fakes.calls


def test_latest_snapshot_of_picks_newest_available(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    world.rds.create_db_snapshot(DBSnapshotIdentifier="newer", DBInstanceIdentifier=world.source_instance)
    src = snap_source(world, snapshot=None, latest_snapshot_of=world.source_instance, snapshot_type="manual")
    report = backend(src, session, clock).preflight(ctx(clock, []))
    assert report.recovery_point["snapshot_id"] == "newer"


def test_throttled_restore_is_retried_on_the_clock(world: World, session: Any, clock: FakeClock) -> None:
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
        out = drive(backend(snap_source(world), session, clock), clock)
    assert out.error is None, out.error
    assert calls["n"] == 2
    assert drill_leftovers(session) == []


def test_terminal_state_fails_fast_and_cleans_up(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock, restore_seconds=600, terminal_status="incompatible-restore").install(session)
    out = drive(backend(snap_source(world), session, clock), clock)
    assert isinstance(out.error, RestoreFailed) and "incompatible-restore" in str(out.error)
    assert clock.monotonic_ns() / 1e9 < 3600  # did not wait for the deadline
    assert out.teardown_errors == [] and drill_leftovers(session) == []


def test_deadline_exceeded_while_creating(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock, restore_seconds=10 * 3600).install(session)
    out = drive(backend(snap_source(world), session, clock), clock, state_seconds=3600)
    assert isinstance(out.error, DeadlineExceeded)
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
    world: World, session: Any, clock: FakeClock, route: str, reason: str
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
    out = drive(backend(snap_source(world), session, clock), clock)
    assert isinstance(out.error, IsolationError) and reason in str(out.error)
    assert no_restore_calls(fakes) and out.registry == []
    # the same route, reviewed and listed, is accepted
    allowed = isolation(world, allowed_routes=[f"{world.private_rtb}:0.0.0.0/0"])
    ok = backend(snap_source(world, isolation=allowed), session, clock, run_id="run-0002")
    ok.preflight(ctx(clock, []))
    assert any("(allowed)" in f["detail"] for f in ok.isolation_facts())


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


def test_public_restored_instance_is_refused(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock, always_public=True).install(session)
    out = drive(backend(snap_source(world), session, clock), clock)
    assert isinstance(out.error, IsolationError) and "PubliclyAccessible=True" in str(out.error)
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


def test_teardown_from_the_record_alone_is_idempotent(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    out = drive(backend(snap_source(world), session, clock), clock, teardown=False)
    assert out.error is None and len(drill_leftovers(session)) == 3
    rebuilt = backend(snap_source(world), session, clock)  # as after a crash: a new backend, journal records only
    records = [Resource.from_dict(r.to_dict()) for r in reversed(out.registry)]
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


def test_available_mark_uses_rds_event_inside_the_poll_window(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock, restore_seconds=3600).install(session)
    truth = clock.now() + timedelta(seconds=3600)
    fakes.events = [{"Message": "Restored from snapshot prod-db-snap", "Date": truth, "SourceIdentifier": "x"}]
    out = drive(backend(snap_source(world), session, clock), clock)
    mark = next(m for m in out.marks if m.name == "instance-available")
    assert mark.source == "rds-event" and mark.at.startswith(truth.isoformat()[:19])


def test_incident_mode_tags_and_hint(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    b = backend(snap_source(world), session, clock, keep_seconds=3 * 86400)
    out = drive(b, clock, teardown=False)
    assert out.error is None
    keep_all(b, clock, out.registry, 3 * 86400)
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


def test_iam_auth_uses_tokens_not_passwords(world: World, session: Any, clock: FakeClock) -> None:
    fakes = Fakes(clock).install(session)
    out = drive(backend(snap_source(world, iam_auth=True, master_username="drill_reader"), session, clock), clock)
    assert out.error is None
    assert "X-Amz-Signature" in out.endpoint.password.reveal() and out.endpoint.user == "drill_reader"
    assert out.endpoint.options["auth"] == "iam"
    assert "credentials-applied" in [m.name for m in out.marks]
    assert fakes.count("ModifyDBInstance") == 1  # enforcement only (public/protected/backups), no password


def test_sweep_removes_crashed_runs_only(world: World, session: Any, clock: FakeClock) -> None:
    Fakes(clock).install(session)
    crashed = backend(snap_source(world), session, clock, run_id="crashed")
    live = backend(snap_source(world), session, clock, run_id="live", runbook="billing")
    assert drive(crashed, clock, teardown=False).error is None
    assert drive(live, clock, teardown=False).error is None
    assert len(drill_leftovers(session)) == 6
    clock.advance(7 * 3600)
    preview = sweep(session, timedelta(hours=6), True, lambda r: r == "live", clock)
    assert {(r["run_id"], r["action"]) for r in preview} == {("crashed", "would-delete"), ("live", "kept")}
    assert len(drill_leftovers(session)) == 6
    done = sweep(session, timedelta(hours=6), False, lambda r: r == "live", clock)
    assert sorted(r["action"] for r in done) == ["deleted"] * 3 + ["kept"] * 3
    assert all(x.startswith("drill-billing-") for x in drill_leftovers(session))
    assert world.rds.describe_db_instances(DBInstanceIdentifier=world.source_instance)["DBInstances"]


def test_password_never_reaches_logs_or_facts(world: World, session: Any, clock: FakeClock) -> None:
    from structlog.testing import capture_logs

    Fakes(clock, modify_seconds=30).install(session)
    b = backend(snap_source(world), session, clock)
    with capture_logs() as logs:
        out = drive(b, clock, teardown=False)
    secret = out.endpoint.password.reveal()
    assert logs and secret not in repr(logs)
    assert secret not in repr(b.isolation_facts()) + repr(b.target_facts()) + b.connection_hint()
    assert secret not in repr(out.registry) + repr(out.marks) + repr(out.endpoint.public())
