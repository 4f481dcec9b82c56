"""Pure isolation logic, identifiers, tags and polling policy: no AWS at all."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drills.aws.calls import drill_identifier, drill_tags, tag_value
from drills.aws.isolation import (
    NetworkView,
    check_restored,
    check_routes,
    check_security_group,
    effective_route_tables,
    evaluate,
    raise_if_violated,
    route_exit,
)
from drills.errors import IsolationError, RunbookError
from drills.runbook import parse_runbook
from drills.wait import PollPolicy

LOCAL = {"DestinationCidrBlock": "10.0.0.0/16", "GatewayId": "local", "State": "active"}


def table(rtb: str, routes: list[dict[str, str]], subnets: Sequence[str] = (), main: bool = False) -> dict[str, Any]:
    assocs = [{"SubnetId": s} for s in subnets] + ([{"Main": True}] if main else [])
    return {"RouteTableId": rtb, "Routes": [LOCAL, *routes], "Associations": assocs}


@pytest.mark.parametrize(
    ("route", "leaves"),
    [
        ({"GatewayId": "igw-1"}, "internet gateway"),
        ({"GatewayId": "vgw-1"}, "VPN gateway"),
        ({"NatGatewayId": "nat-1"}, "NAT gateway"),
        ({"EgressOnlyInternetGatewayId": "eigw-1"}, "egress-only"),
        ({"TransitGatewayId": "tgw-1"}, "transit gateway"),
        ({"VpcPeeringConnectionId": "pcx-1"}, "peering"),
        ({"InstanceId": "i-1"}, "instance"),
        ({"NetworkInterfaceId": "eni-1"}, "network interface"),
        ({}, "unrecognised"),
        ({"GatewayId": "local"}, None),
        ({"GatewayId": "vpce-1"}, None),
    ],
)
def test_route_exit(route: dict[str, str], leaves: str | None) -> None:
    got = route_exit({"DestinationCidrBlock": "0.0.0.0/0", **route})
    assert (got is None) if leaves is None else (got is not None and leaves in got)


def test_effective_table_is_explicit_else_main() -> None:
    tables = [table("rtb-main", [], main=True), table("rtb-priv", [], ["subnet-a"])]
    eff = effective_route_tables(["subnet-a", "subnet-b"], tables)
    assert eff["subnet-a"]["RouteTableId"] == "rtb-priv"  # type: ignore[index]
    assert eff["subnet-b"]["RouteTableId"] == "rtb-main"  # type: ignore[index]


def test_allowed_and_blackhole_routes_are_excepted() -> None:
    tables = [
        table(
            "rtb-1",
            [
                {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1"},
                {"DestinationCidrBlock": "192.168.0.0/16", "TransitGatewayId": "tgw-1", "State": "blackhole"},
            ],
            ["subnet-a"],
        )
    ]
    assert not check_routes(["subnet-a"], tables)[0].passed
    facts = check_routes(["subnet-a"], tables, ["rtb-1:0.0.0.0/0"])
    assert facts[0].passed and "(allowed)" in facts[0].detail and "(blackhole)" in facts[0].detail


def test_no_table_at_all_fails_closed() -> None:
    assert not check_routes(["subnet-a"], [])[0].passed


def test_security_group_world_ingress() -> None:
    open_v6 = {
        "GroupId": "sg-1",
        "VpcId": "vpc-1",
        "IpPermissions": [{"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}],
    }
    facts = check_security_group(open_v6, "vpc-2")
    assert [f.passed for f in facts] == [False, False]
    assert "::/0 on all ports" in facts[0].detail
    closed = {
        "GroupId": "sg-2",
        "VpcId": "vpc-1",
        "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
        ],
    }
    assert all(f.passed for f in check_security_group(closed, "vpc-1"))


def test_evaluate_and_raise() -> None:
    view = NetworkView(
        vpc_id="vpc-1",
        subnets=[{"SubnetId": "subnet-a", "VpcId": "vpc-1"}, {"SubnetId": "subnet-b", "VpcId": "vpc-9"}],
        route_tables=[table("rtb-1", [], ["subnet-a", "subnet-b"])],
        planned_ingress={"port": 5432, "source": "sg-runner"},
    )
    facts = evaluate(view)
    bad = [f for f in facts if not f.passed]
    assert [(f.check, f.subject) for f in bad] == [("same-vpc", "subnet-b")]
    with pytest.raises(IsolationError, match="same-vpc subnet-b"):
        raise_if_violated(facts)
    assert all(set(f.to_dict()) == {"check", "subject", "passed", "detail"} for f in facts)


def test_check_restored() -> None:
    db = {
        "DBInstanceIdentifier": "drill-x",
        "PubliclyAccessible": True,
        "DBSubnetGroup": {"DBSubnetGroupName": "other"},
        "VpcSecurityGroups": [{"VpcSecurityGroupId": "sg-1"}],
    }
    assert [f.passed for f in check_restored(db, "drill-x", ["sg-1"])] == [False, False, True]


@given(
    runbook=st.text(min_size=0, max_size=80),
    run_id=st.text(min_size=1, max_size=40),
    suffix=st.sampled_from(["", "w1"]),
)
def test_identifiers_are_valid_rds_identifiers(runbook: str, run_id: str, suffix: str) -> None:
    ident = drill_identifier(runbook, run_id, suffix)
    assert ident.startswith("drill-") and len(ident) <= 63
    assert ident[0].isalpha() and "--" not in ident and not ident.endswith("-")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in ident)
    assert ident == drill_identifier(runbook, run_id, suffix)  # chosen up front, reproducible after a crash


def test_tags_carry_run_and_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    tags = drill_tags("run-1", "orders", now, timedelta(hours=6))
    assert tag_value(tags, "restore-drills:run-id") == "run-1"
    assert tag_value(tags, "restore-drills:expires-at") == "2026-01-01T06:00:00.000Z"
    assert tag_value(tags, "restore-drills:runbook") == "orders"


def test_poll_policy_budget_for_two_hours() -> None:
    policy, rng = PollPolicy(), random.Random(1)
    t, polls, widest = 0.0, 0, 0.0
    while t < 7200:
        step = policy.interval(t, rng)
        widest = max(widest, step)
        t += step
        polls += 1
    assert polls < 100 and widest <= 150 * 1.1


@pytest.mark.parametrize("name", ["aws-rds-snapshot", "aws-rds-pitr", "aws-aurora-snapshot", "aws-aurora-pitr"])
def test_example_runbooks_load(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "runbooks" / f"{name}.yaml"
    rb = parse_runbook(path.read_text(), str(path))
    assert rb.name == name and rb.source.kind == name.removeprefix("aws-")


def test_isolation_model_rejects_ambiguous_or_open_settings() -> None:
    base = (
        "name: x\nobjectives: {rto_seconds: 60}\nsource:\n  kind: rds-pitr\n  engine: postgres\n"
        "  source_instance: a\n  target_time: latest\n"
    )
    for iso, problem in (
        ("{subnet_ids: [s-1]}", "runner_security_group_id or runner_cidr"),
        ("{subnet_ids: [s-1], runner_cidr: 0.0.0.0/0}", "open to the world"),
        ("{subnet_ids: [s-1], runner_cidr: 10.0.0.0/8, allowed_routes: [oops]}", "allowed_routes"),
        ("{subnet_ids: [s-1], db_subnet_group: g, runner_cidr: 10.0.0.0/8}", "not both"),
    ):
        with pytest.raises(RunbookError, match=problem):
            parse_runbook(base + f"  isolation: {iso}\n")


FACT_CHECKS = (
    "no-egress-route",
    "route-table",
    "no-world-ingress",
    "same-vpc",
    "subnets",
    "drill-sg-ingress",
    "drill-sg-only-runner-ingress",
    "not-publicly-accessible",
    "in-drill-subnet-group",
    "drill-security-groups",
)


@pytest.mark.parametrize("check", FACT_CHECKS)
def test_each_refusal_hints_at_its_own_cause_only(check: str) -> None:
    from drills.aws.isolation import HINTS
    from drills.backends.base import Fact

    with pytest.raises(IsolationError) as info:
        raise_if_violated([Fact(check, "x", False, "bad"), Fact("no-egress-route", "y", True, "fine")])
    hint = info.value.hint or ""
    assert hint == HINTS[check]
    routes = check in ("no-egress-route", "route-table")
    assert ("route" in hint) is routes, hint  # a passed route fact lends no route advice to another failure


def test_every_check_the_code_emits_has_its_own_hint() -> None:
    import ast

    from drills.aws.isolation import HINTS

    emitted: set[str] = set()
    for path in (Path(__file__).resolve().parents[2] / "drills" / "aws").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Fact" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    emitted.add(first.value)
    assert emitted and emitted <= set(HINTS), emitted - set(HINTS)
    assert set(FACT_CHECKS) == set(HINTS)
