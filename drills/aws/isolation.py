"""Proof that a restored database sits in a network it cannot leave.

A restored production copy must not be reachable from, or able to talk to,
anything outside its VPC. Before any restore call we check, from what EC2 and
RDS describe:

* every subnet's *effective* route table (its explicit association, else the
  VPC's main table) has no route that leaves the VPC: internet, NAT and
  egress-only gateways, transit gateways, peering, VPN gateways, instances or
  network interfaces as targets (appliances), carrier and local gateways,
  unless the route is listed in ``allowed_routes`` as ``rtb-id:destination``;
* no security group used allows ingress from ``0.0.0.0/0`` or ``::/0``;
* all subnets (and named security groups) belong to the one VPC.

The logic is pure (plain dicts in, :class:`Fact` list out) so it is tested
exhaustively without AWS; :func:`collect` is the only part that calls AWS.
Each fact goes into the evidence as ``{check, subject, passed, detail}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drills.backends.base import Fact
from drills.errors import IsolationError

__all__ = [
    "HINTS",
    "WORLD",
    "NetworkView",
    "check_restored",
    "check_routes",
    "check_security_group",
    "check_subnets",
    "collect",
    "effective_route_tables",
    "evaluate",
    "isolation_hint",
    "raise_if_violated",
    "route_exit",
    "same_rule",
]

WORLD = frozenset({"0.0.0.0/0", "::/0"})

# Route target fields that send traffic out of the VPC (or through a box that can).
_EXIT_TARGETS = (
    ("NatGatewayId", "NAT gateway"),
    ("EgressOnlyInternetGatewayId", "egress-only internet gateway"),
    ("TransitGatewayId", "transit gateway"),
    ("VpcPeeringConnectionId", "VPC peering connection"),
    ("InstanceId", "instance (appliance)"),
    ("NetworkInterfaceId", "network interface (appliance)"),
    ("CarrierGatewayId", "carrier gateway"),
    ("LocalGatewayId", "local gateway"),
    ("CoreNetworkArn", "core network"),
)


@dataclass(frozen=True)
class NetworkView:
    """What AWS said about the network a drill will restore into."""

    vpc_id: str
    subnets: Sequence[Mapping[str, Any]]  # describe_subnets items
    route_tables: Sequence[Mapping[str, Any]]  # describe_route_tables items of the VPC
    security_groups: Sequence[Mapping[str, Any]] = ()  # named (pre-existing) groups
    planned_ingress: Mapping[str, Any] | None = None  # the drill SG's one rule, when the drill creates it
    db_subnet_group: str | None = None
    allowed_routes: tuple[str, ...] = ()
    notes: list[Fact] = field(default_factory=list)


def route_destination(route: Mapping[str, Any]) -> str:
    return str(
        route.get("DestinationCidrBlock")
        or route.get("DestinationIpv6CidrBlock")
        or route.get("DestinationPrefixListId")
        or "?"
    )


def route_exit(route: Mapping[str, Any]) -> str | None:
    """What the route leaves the VPC through, or None if it stays inside."""
    gateway = str(route.get("GatewayId") or "")
    if gateway.startswith("igw-"):
        return f"internet gateway {gateway}"
    if gateway.startswith("vgw-"):
        return f"VPN gateway {gateway}"
    for key, label in _EXIT_TARGETS:
        if route.get(key):
            return f"{label} {route[key]}"
    if gateway == "local" or gateway.startswith("vpce-"):
        return None  # inside the VPC, or a gateway endpoint to an AWS service
    if gateway:
        return f"gateway {gateway}"
    # No target we recognise (a new target type, or a describe that omits it):
    # fail closed, a reviewer can still list it in allowed_routes.
    return "unrecognised target"


def effective_route_tables(
    subnet_ids: Iterable[str], route_tables: Sequence[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any] | None]:
    """Subnet -> the table that routes it: its explicit association, else the main table."""
    main: Mapping[str, Any] | None = None
    explicit: dict[str, Mapping[str, Any]] = {}
    for table in route_tables:
        for assoc in table.get("Associations", []):
            if assoc.get("Main"):
                main = table
            elif assoc.get("SubnetId"):
                explicit[str(assoc["SubnetId"])] = table
    return {sid: explicit.get(sid, main) for sid in subnet_ids}


def check_routes(
    subnet_ids: Sequence[str], route_tables: Sequence[Mapping[str, Any]], allowed_routes: Iterable[str] = ()
) -> list[Fact]:
    allowed = set(allowed_routes)
    facts: list[Fact] = []
    for sid, table in effective_route_tables(subnet_ids, route_tables).items():
        if table is None:
            facts.append(Fact("route-table", sid, False, "no route table found (neither explicit nor main)"))
            continue
        rtb = str(table.get("RouteTableId"))
        how = "explicit" if any(a.get("SubnetId") == sid for a in table.get("Associations", [])) else "main"
        exits: list[str] = []
        excused: list[str] = []
        for route in table.get("Routes", []):
            target = route_exit(route)
            if target is None:
                continue
            dest = route_destination(route)
            label = f"{dest} -> {target}"
            if route.get("State") == "blackhole":
                excused.append(f"{label} (blackhole)")
            elif f"{rtb}:{dest}" in allowed:
                excused.append(f"{label} (allowed)")
            else:
                exits.append(label)
        detail = f"{rtb} ({how})"
        if exits:
            detail += ": routes leave the VPC: " + "; ".join(exits)
        else:
            detail += ": no route leaves the VPC"
        if excused:
            detail += "; excepted: " + "; ".join(excused)
        facts.append(Fact("no-egress-route", sid, not exits, detail))
    return facts


def _world_sources(perm: Mapping[str, Any]) -> list[str]:
    found = [str(r.get("CidrIp")) for r in perm.get("IpRanges", []) if r.get("CidrIp") in WORLD]
    found += [str(r.get("CidrIpv6")) for r in perm.get("Ipv6Ranges", []) if r.get("CidrIpv6") in WORLD]
    return found


def check_security_group(sg: Mapping[str, Any], vpc_id: str | None = None) -> list[Fact]:
    gid = str(sg.get("GroupId") or sg.get("GroupName"))
    open_rules = []
    for perm in sg.get("IpPermissions", []):
        for source in _world_sources(perm):
            ports = "all ports" if perm.get("IpProtocol") == "-1" else f"{perm.get('FromPort')}-{perm.get('ToPort')}"
            open_rules.append(f"{source} on {ports}")
    facts = [
        Fact(
            "no-world-ingress",
            gid,
            not open_rules,
            "ingress open to the world: " + ", ".join(open_rules)
            if open_rules
            else "no ingress from 0.0.0.0/0 or ::/0",
        )
    ]
    if vpc_id is not None:
        same = sg.get("VpcId") == vpc_id
        facts.append(Fact("same-vpc", gid, same, f"security group in {sg.get('VpcId')}, drill VPC {vpc_id}"))
    return facts


def check_subnets(subnets: Sequence[Mapping[str, Any]], vpc_id: str) -> list[Fact]:
    return [
        Fact("same-vpc", str(s.get("SubnetId")), s.get("VpcId") == vpc_id, f"subnet in {s.get('VpcId')}")
        for s in subnets
    ]


def _check_planned(rule: Mapping[str, Any]) -> Fact:
    source = str(rule.get("source"))
    ok = source not in WORLD
    return Fact(
        "drill-sg-ingress",
        "planned drill security group",
        ok,
        f"only tcp/{rule.get('port')} from {source}" + ("" if ok else " (open to the world)"),
    )


def evaluate(view: NetworkView) -> list[Fact]:
    """Every isolation fact for a network view; pure."""
    subnet_ids = [str(s["SubnetId"]) for s in view.subnets]
    facts = list(view.notes)
    if not subnet_ids:
        facts.append(Fact("subnets", view.db_subnet_group or view.vpc_id, False, "no subnets to restore into"))
    facts += check_subnets(view.subnets, view.vpc_id)
    facts += check_routes(subnet_ids, view.route_tables, view.allowed_routes)
    for sg in view.security_groups:
        facts += check_security_group(sg, view.vpc_id)
    if view.planned_ingress is not None:
        facts.append(_check_planned(view.planned_ingress))
    return facts


def check_restored(
    db: Mapping[str, Any], subnet_group: str | None, security_group_ids: Iterable[str] | None
) -> list[Fact]:
    """Facts about a restored DB instance as AWS reports it (after enforcing)."""
    ident = str(db.get("DBInstanceIdentifier"))
    public = bool(db.get("PubliclyAccessible"))
    facts = [Fact("not-publicly-accessible", ident, not public, f"PubliclyAccessible={public}")]
    actual_group = (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
    if subnet_group is not None:
        facts.append(
            Fact("in-drill-subnet-group", ident, actual_group == subnet_group, f"DB subnet group {actual_group}")
        )
    if security_group_ids is not None:
        actual = sorted(str(g.get("VpcSecurityGroupId")) for g in db.get("VpcSecurityGroups", []))
        wanted = sorted(security_group_ids)
        facts.append(Fact("drill-security-groups", ident, actual == wanted, f"security groups {', '.join(actual)}"))
    return facts


# What to do about each kind of failed check: a refusal names its own cause, never another's.
HINTS: dict[str, str] = {
    "no-egress-route": "use private subnets whose route tables have no route out of the VPC, or list a reviewed "
    "exception in isolation.allowed_routes as rtb-id:destination",
    "route-table": "associate the subnets with a route table (or give the VPC a main table) without routes out "
    "of the VPC",
    "no-world-ingress": "remove the 0.0.0.0/0 and ::/0 ingress rules from that security group, or leave "
    "isolation.security_group_ids out so the drill creates its own group that admits only the runner",
    "same-vpc": "put every subnet, the DB subnet group and every security group in one VPC (isolation.vpc_id)",
    "subnets": "list isolation.subnet_ids, or a db_subnet_group that has subnets",
    "drill-sg-ingress": "set isolation.runner_cidr to the runner's own address range (never 0.0.0.0/0 or ::/0), "
    "or isolation.runner_security_group_id",
    "drill-sg-only-runner-ingress": "something else added ingress rules to the drill's security group while it "
    "ran: find who changes security groups named drill-*; the drill only tears down",
    "not-publicly-accessible": "AWS still reports the restored database publicly accessible after the drill "
    "turned it off: check SCPs or automation that re-enable it; the drill only tears down",
    "in-drill-subnet-group": "AWS placed the restored database outside the drill's DB subnet group: check the "
    "restore parameters and any automation that moves databases; the drill only tears down",
    "drill-security-groups": "AWS attached other security groups than the drill's to the restored database: "
    "check automation that edits security groups of new databases; the drill only tears down",
}
_GENERIC_HINT = "see the failed isolation facts in the evidence; the drill restores nothing until they pass"


def isolation_hint(failed: Iterable[Fact]) -> str:
    """One hint per distinct cause among the failed facts, in the order they failed."""
    hints: list[str] = []
    for f in failed:
        hint = HINTS.get(f.check, _GENERIC_HINT)
        if hint not in hints:
            hints.append(hint)
    return "; ".join(hints) or _GENERIC_HINT


def raise_if_violated(facts: Iterable[Fact], when: str = "before restoring") -> None:
    """An IsolationError naming the failed facts and carrying all of them (the evidence records them)."""
    facts = list(facts)
    bad = [f for f in facts if not f.passed]
    if bad:
        reasons = "; ".join(f"{f.check} {f.subject}: {f.detail}" for f in bad)
        raise IsolationError(f"isolation not proven {when}: {reasons}", hint=isolation_hint(bad), facts=tuple(facts))


def collect(
    call: Any,
    ec2: Any,
    rds: Any,
    *,
    vpc_id: str | None,
    subnet_ids: Sequence[str],
    db_subnet_group: str | None,
    security_group_ids: Sequence[str],
    planned_ingress: Mapping[str, Any] | None,
    allowed_routes: tuple[str, ...],
) -> NetworkView:
    """Describe the network (the only AWS part of this module); ``call`` is an AwsCaller."""
    notes: list[Fact] = []
    ids = list(subnet_ids)
    if db_subnet_group:
        group = call(rds.describe_db_subnet_groups, DBSubnetGroupName=db_subnet_group)["DBSubnetGroups"][0]
        ids = [str(s["SubnetIdentifier"]) for s in group.get("Subnets", [])]
        group_vpc = str(group.get("VpcId"))
        if vpc_id and group_vpc != vpc_id:
            notes.append(Fact("same-vpc", db_subnet_group, False, f"DB subnet group in {group_vpc}, not {vpc_id}"))
        vpc_id = vpc_id or group_vpc
    subnets = call(ec2.describe_subnets, SubnetIds=ids)["Subnets"] if ids else []
    if vpc_id is None:
        vpcs = sorted({str(s["VpcId"]) for s in subnets})
        if len(vpcs) != 1:
            notes.append(Fact("same-vpc", ",".join(ids), False, f"subnets span VPCs {vpcs}"))
        vpc_id = vpcs[0] if vpcs else "unknown"
    tables = call(ec2.describe_route_tables, Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    groups = (
        call(ec2.describe_security_groups, GroupIds=list(security_group_ids))["SecurityGroups"]
        if security_group_ids
        else []
    )
    return NetworkView(
        vpc_id=vpc_id,
        subnets=subnets,
        route_tables=tables,
        security_groups=groups,
        planned_ingress=planned_ingress,
        db_subnet_group=db_subnet_group,
        allowed_routes=allowed_routes,
        notes=notes,
    )


def same_rule(perm: Mapping[str, Any], rule: Mapping[str, Any]) -> bool:
    """Whether an ingress permission AWS reports is exactly the drill's runner rule (same port, same peers)."""
    if perm.get("IpProtocol") != rule["IpProtocol"] or perm.get("FromPort") != rule["FromPort"]:
        return False
    got = {g.get("GroupId") for g in perm.get("UserIdGroupPairs", [])}
    got |= {r.get("CidrIp") for r in perm.get("IpRanges", [])}
    got |= {r.get("CidrIpv6") for r in perm.get("Ipv6Ranges", [])}
    want = {g.get("GroupId") for g in rule.get("UserIdGroupPairs", [])}
    want |= {r.get("CidrIp") for r in rule.get("IpRanges", [])}
    want |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
    return got == want


def runner_rule(port: int, runner_security_group_id: str | None, runner_cidr: str | None) -> dict[str, Any]:
    """The one ingress rule of the drill's security group: the database port, from the runner only."""
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if runner_security_group_id:
        rule["UserIdGroupPairs"] = [{"GroupId": runner_security_group_id, "Description": "drill runner"}]
    elif runner_cidr and ":" in runner_cidr:
        rule["Ipv6Ranges"] = [{"CidrIpv6": runner_cidr, "Description": "drill runner"}]
    else:
        rule["IpRanges"] = [{"CidrIp": runner_cidr, "Description": "drill runner"}]
    return rule
