"""AWS edges with moto: quota answers that cannot be used, and refusals whose hint names their own cause."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.aws.rds_declaration import RdsSnapshotSource
from drills.backends import backend_factory
from drills.clock import FakeClock
from drills.errors import IsolationError, PreflightError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the shared aws_fakes helpers
from aws_fakes import (
    REGION,
    Fakes,
    World,
    _Http,
    ctx,
    drill_leftovers,
    isolation,
    machine_drill,
    make_world,
    settings,
)
from dataplane import PgPlane


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def snap_backend(w: World, session: Any, clock: FakeClock, database: str = "orders", **iso: Any) -> Any:
    src = RdsSnapshotSource.model_validate(
        {
            "kind": "rds-snapshot",
            "region": REGION,
            "engine": "postgres",
            "snapshot": w.snapshot,
            "database": database,
            "isolation": iso or isolation(w),
        }
    )
    return backend_factory("rds")(src, settings(session, clock))


# ---------------------------------------------------------------- quota


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real moto server on loopback: what the adversarial probe ran against (HTTP, XML, botocore parsing)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield url
    finally:
        server.stop()


def test_moto_servers_unparsable_quota_answer_is_a_warning_and_the_drill_runs(
    moto_server: str, clock: FakeClock, plane: PgPlane, tmp_path: Path
) -> None:
    session = boto3.Session(region_name=REGION)
    w = make_world(session)
    # the answer really is unusable: botocore cannot parse moto server's HTML 500
    with pytest.raises(Exception, match="Unable to parse response"):
        session.client("rds").describe_account_attributes()
    b = snap_backend(w, session, clock, database=plane.database)
    out = machine_drill(b, session, clock, plane, tmp_path)
    assert out.error is None, out.error
    assert out.result is not None and out.result.verdict == "passed"
    report = b.preflight(ctx(clock, []))
    quota = report.facts["quota"]
    assert quota["checked"] is False and "ResponseParserError" in quota["warning"]
    assert report.facts["warnings"] == [f"quota: {quota['warning']}"]
    assert [t.deleted for t in out.teardown] == [True, True, True] and drill_leftovers(session) == []


ANSWERS = {
    "not implemented (in-process moto)": None,
    "no AccountQuotas": {},
    "AccountQuotas not a list": {"AccountQuotas": "DBInstances=1/40"},
    "quota missing": {"AccountQuotas": [{"AccountQuotaName": "AllocatedStorage", "Used": 1, "Max": 100000}]},
    "Max missing": {"AccountQuotas": [{"AccountQuotaName": "DBInstances", "Used": 3}]},
    "Used not a count": {"AccountQuotas": [{"AccountQuotaName": "DBInstances", "Used": "lots", "Max": 40}]},
    "Max a boolean": {"AccountQuotas": [{"AccountQuotaName": "DBInstances", "Used": 0, "Max": True}]},
    "access denied": "AccessDenied",
}


@pytest.mark.parametrize("case", list(ANSWERS))
def test_an_unusable_quota_answer_is_a_warning_not_a_failure(case: str, clock: FakeClock) -> None:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        answer = ANSWERS[case]
        if answer is not None:

            def reply(**_: Any) -> Any:
                if isinstance(answer, str):
                    return _Http(403), {"Error": {"Code": answer, "Message": "no"}, "ResponseMetadata": {}}
                return _Http(200), {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}

            session.events.register("before-call.rds.DescribeAccountAttributes", reply)
        b = snap_backend(w, session, clock)
        report = b.preflight(ctx(clock, []))
        quota = report.facts["quota"]
        assert quota["checked"] is False, quota
        assert quota["warning"] and report.facts["warnings"]
        assert "DBInstances" in quota["warning"] or "describe_account_attributes" in quota["warning"]


def test_a_full_quota_still_fails_preflight(clock: FakeClock) -> None:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        fakes = Fakes(clock, quota=(40, 40)).install(session)
        with pytest.raises(PreflightError, match=r"quota DBInstances exhausted \(40/40\)"):
            snap_backend(w, session, clock).preflight(ctx(clock, []))
        assert not [c for c in fakes.calls if c.startswith(("Restore", "Create"))]


# ---------------------------------------------------------------- isolation hints


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield make_world(boto3.Session(region_name=REGION))


def refusal(w: World, clock: FakeClock, **iso: Any) -> IsolationError:
    Fakes(clock).install(w.session)
    with pytest.raises(IsolationError) as info:
        snap_backend(w, w.session, clock, **iso).preflight(ctx(clock, []))
    return info.value


def test_a_world_open_security_group_gets_a_security_group_hint_not_a_route_hint(
    world: World, clock: FakeClock
) -> None:
    sg = world.ec2.create_security_group(GroupName="open", Description="x", VpcId=world.vpc_id)["GroupId"]
    world.ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    err = refusal(world, clock, subnet_ids=world.subnet_ids, security_group_ids=[sg])
    assert err.hint is not None
    assert "0.0.0.0/0" in err.hint and "security group" in err.hint
    assert "route" not in err.hint.lower()


def test_a_route_out_gets_a_route_hint_not_a_security_group_hint(world: World, clock: FakeClock) -> None:
    igw = world.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    world.ec2.create_route(RouteTableId=world.private_rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    err = refusal(world, clock)
    assert err.hint is not None and "allowed_routes" in err.hint
    assert "security group" not in err.hint and "0.0.0.0/0 and ::/0 ingress" not in err.hint


def test_two_causes_get_both_hints(world: World, clock: FakeClock) -> None:
    sg = world.ec2.create_security_group(GroupName="open6", Description="x", VpcId=world.vpc_id)["GroupId"]
    world.ec2.authorize_security_group_ingress(
        GroupId=sg,
        IpPermissions=[{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}],
    )
    igw = world.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    world.ec2.create_route(RouteTableId=world.private_rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    err = refusal(world, clock, subnet_ids=world.subnet_ids, security_group_ids=[sg])
    assert err.hint is not None and "allowed_routes" in err.hint and "security group" in err.hint


def test_iam_auth_is_recorded_as_a_warning_about_its_unscopable_permission(clock: FakeClock) -> None:
    from drills.aws.backend import IAM_AUTH_WARNING

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        Fakes(clock).install(session)
        src = RdsSnapshotSource.model_validate(
            {
                "kind": "rds-snapshot",
                "region": REGION,
                "engine": "postgres",
                "snapshot": w.snapshot,
                "iam_auth": True,
                "master_username": "drill_iam",
                "isolation": isolation(w),
            }
        )
        report = backend_factory("rds")(src, settings(session, clock)).preflight(ctx(clock, []))
        assert report.facts["warnings"] == [IAM_AUTH_WARNING] and report.facts["quota"]["checked"] is True
        assert "cannot be limited to drill copies" in IAM_AUTH_WARNING
