"""Make moto behave more like AWS for drill tests: time, phases, throttling and faults.

moto answers instantly and is forgiving (see /work/shared/notes/moto.md). These
helpers hang off the boto3 Session's event system, so every client the backend
creates from the injected session goes through them:

* :class:`Fakes` counts every API call (``before-call``), can fail the N-th call
  *before* it reaches moto (nothing happens) or *after* moto performed it (the
  response is lost: the case that tests idempotent adoption), throttles a share
  of calls, and answers ``DescribeAccountAttributes`` (not implemented by moto).
* It also drives a restore timeline on the injected FakeClock: restored
  instances and clusters read ``creating`` for ``restore_seconds`` after the
  restore call, ``modifying`` (with a pending password) for ``modify_seconds``
  after a modify, and optionally a terminal status.

:func:`make_world` builds a VPC with private subnets, a runner security group,
and source databases with snapshots; :func:`drive` runs a backend the way the
machine does (teardown always, in reverse).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from botocore.exceptions import ClientError

from drills.backends.base import BackendSettings, StepContext
from drills.clock import FakeClock
from drills.errors import DrillError
from drills.resources import Resource, TeardownResult

REGION = "us-east-1"


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""
        self.raw = None


def _error(code: str, message: str = "injected fault") -> tuple[_Http, dict[str, Any]]:
    return _Http(400), {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}, "RetryAttempts": 0},
    }


@dataclass
class Fakes:
    clock: FakeClock
    restore_seconds: float = 0.0
    modify_seconds: float = 0.0
    create_seconds: float | None = None  # a writer instance added to a cluster (default: restore_seconds)
    terminal_status: str | None = None
    throttle_rate: float = 0.0
    fail_at: int | None = None  # 1-based index of the call to fail
    fail_mode: str = "before"  # "before": not performed; "after": performed, response lost
    fail_code: str = "AccessDenied"
    fail_ops: dict[str, str] = field(default_factory=dict)  # operation -> error code, every time
    quota: tuple[int, int] = (1, 40)
    always_public: bool = False  # describes report PubliclyAccessible=True whatever happens
    events: list[dict[str, Any]] = field(default_factory=list)  # injected DescribeEvents answers
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    calls: list[str] = field(default_factory=list)
    throttled: int = 0
    ready_at: dict[str, datetime] = field(default_factory=dict)  # truth: when each restore became available
    _modifying_until: dict[str, datetime] = field(default_factory=dict)

    def install(self, session: Any) -> Fakes:
        session.events.register("before-call", self._before)
        session.events.register("after-call", self._after)
        return self

    # -- before the call reaches moto
    def _before(self, event_name: str, **_: Any) -> Any:
        op = event_name.rsplit(".", maxsplit=1)[-1]
        self.calls.append(op)
        n = len(self.calls)
        if self.fail_at == n and self.fail_mode == "before":
            return _error(self.fail_code)
        if op in self.fail_ops:
            return _error(self.fail_ops[op])
        if self.throttle_rate and self.rng.random() < self.throttle_rate:
            self.throttled += 1
            return _error("Throttling", "Rate exceeded")
        if op == "DescribeAccountAttributes":
            used, most = self.quota
            return _Http(200), {
                "AccountQuotas": [
                    {"AccountQuotaName": "DBInstances", "Used": used, "Max": most},
                    {"AccountQuotaName": "DBClusters", "Used": used, "Max": most},
                ],
                "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0},
            }
        if op == "DescribeEvents" and self.events:
            return _Http(200), {"Events": list(self.events), "ResponseMetadata": {"HTTPStatusCode": 200}}
        return None

    # -- after moto answered
    def _after(self, event_name: str, parsed: dict[str, Any], **_: Any) -> None:
        op = event_name.rsplit(".", maxsplit=1)[-1]
        now = self.clock.now()
        if "Error" not in parsed:
            self._timeline(op, parsed, now)
        if self.fail_at == len(self.calls) and self.fail_mode == "after":
            raise ClientError({"Error": {"Code": self.fail_code, "Message": "injected after the call"}}, op)

    def _timeline(self, op: str, parsed: dict[str, Any], now: datetime) -> None:
        if op in ("RestoreDBInstanceFromDBSnapshot", "RestoreDBInstanceToPointInTime", "CreateDBInstance"):
            ident = parsed["DBInstance"]["DBInstanceIdentifier"]
            took = self.create_seconds if op == "CreateDBInstance" and self.create_seconds is not None else None
            self.ready_at.setdefault(ident, now + timedelta(seconds=took if took is not None else self.restore_seconds))
        if op in ("RestoreDBClusterFromSnapshot", "RestoreDBClusterToPointInTime"):
            ident = parsed["DBCluster"]["DBClusterIdentifier"]
            self.ready_at.setdefault(ident, now + timedelta(seconds=self.restore_seconds))
        if op in ("ModifyDBInstance", "ModifyDBCluster") and self.modify_seconds:
            obj = parsed.get("DBInstance") or parsed.get("DBCluster") or {}
            ident = obj.get("DBInstanceIdentifier") or obj.get("DBClusterIdentifier")
            self._modifying_until[ident] = now + timedelta(seconds=self.modify_seconds)
        instances = list(parsed.get("DBInstances", [])) + ([parsed["DBInstance"]] if "DBInstance" in parsed else [])
        for db in instances:
            self._phase(db, "DBInstanceStatus", db["DBInstanceIdentifier"], now)
            if self.always_public:
                db["PubliclyAccessible"] = True
        clusters = list(parsed.get("DBClusters", [])) + ([parsed["DBCluster"]] if "DBCluster" in parsed else [])
        for cl in clusters:
            self._phase(cl, "Status", cl["DBClusterIdentifier"], now)

    def _phase(self, obj: dict[str, Any], key: str, ident: str, now: datetime) -> None:
        ready = self.ready_at.get(ident)
        if ready is not None and now < ready:
            obj[key] = "creating"
        elif ready is not None and self.terminal_status:
            obj[key] = self.terminal_status
        elif ident in self._modifying_until and now < self._modifying_until[ident]:
            obj[key] = "resetting-master-credentials"
            obj["PendingModifiedValues"] = {"MasterUserPassword": "****"}

    def count(self, prefix: str = "") -> int:
        return sum(1 for c in self.calls if c.startswith(prefix))


@dataclass
class World:
    session: Any
    rds: Any
    ec2: Any
    vpc_id: str
    subnet_ids: list[str]
    private_rtb: str
    main_rtb: str
    runner_sg: str
    source_instance: str = "prod-db"
    snapshot: str = "prod-db-snap"
    source_cluster: str = "prod-cluster"
    cluster_snapshot: str = "prod-cluster-snap"


def make_world(session: Any, *, aurora: bool = False, rds: bool = True) -> World:
    """A VPC with two private subnets (explicit table, local route only) and source databases."""
    ec2 = session.client("ec2", region_name=REGION)
    rds_c = session.client("rds", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    rtb = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    for s in subnets:
        ec2.associate_route_table(RouteTableId=rtb, SubnetId=s)
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]["RouteTableId"]
    runner = ec2.create_security_group(GroupName="runner", Description="runner", VpcId=vpc)["GroupId"]
    w = World(session, rds_c, ec2, vpc, subnets, rtb, main, runner)
    if rds:
        rds_c.create_db_instance(
            DBInstanceIdentifier=w.source_instance,
            Engine="postgres",
            DBInstanceClass="db.t4g.micro",
            MasterUsername="app_admin",
            MasterUserPassword="prod-password-1",
            AllocatedStorage=20,
            BackupRetentionPeriod=7,
            DeletionProtection=True,  # restores inherit these in moto: the backend must enforce
            PubliclyAccessible=True,
            Tags=[{"Key": "env", "Value": "prod"}],
        )
        rds_c.create_db_snapshot(DBSnapshotIdentifier=w.snapshot, DBInstanceIdentifier=w.source_instance)
    if aurora:
        rds_c.create_db_cluster(
            DBClusterIdentifier=w.source_cluster,
            Engine="aurora-postgresql",
            MasterUsername="app_admin",
            MasterUserPassword="prod-password-1",
            BackupRetentionPeriod=7,
            DeletionProtection=True,
        )
        rds_c.create_db_cluster_snapshot(
            DBClusterSnapshotIdentifier=w.cluster_snapshot, DBClusterIdentifier=w.source_cluster
        )
    return w


def isolation(w: World, **extra: Any) -> dict[str, Any]:
    return {"subnet_ids": w.subnet_ids, "runner_security_group_id": w.runner_sg, **extra}


def settings(
    session: Any, clock: FakeClock, run_id: str = "run-0001", runbook: str = "orders", **kw: Any
) -> BackendSettings:
    return BackendSettings(
        run_id=run_id, run_dir=Path("/tmp/unused"), clock=clock, runbook_name=runbook, aws_session=session, **kw
    )


def ctx(clock: FakeClock, registry: list[Resource], seconds: float = 4 * 3600) -> StepContext:
    return StepContext(
        clock=clock,
        deadline_ns=clock.monotonic_ns() + int(seconds * 1e9),
        log=structlog.get_logger(),
        register=registry.append,
    )


@dataclass
class Outcome:
    error: BaseException | None
    registry: list[Resource]
    teardown: list[TeardownResult]
    teardown_errors: list[BaseException]
    marks: list[Any]
    endpoint: Any = None


def drive(backend: Any, clock: FakeClock, *, state_seconds: float = 4 * 3600, teardown: bool = True) -> Outcome:
    """Run a backend like the machine: states in order, teardown of every registered resource, reversed."""
    registry: list[Resource] = []
    marks: list[Any] = []
    error: BaseException | None = None
    endpoint = None
    try:
        for state in ("preflight", "restore", "await_ready", "endpoint"):
            c = ctx(clock, registry, state_seconds)
            result = getattr(backend, state)(c)
            marks += c.marks
            if state == "endpoint":
                endpoint = result
    except DrillError as exc:
        error = exc
    results: list[TeardownResult] = []
    errors: list[BaseException] = []
    if teardown:
        for res in reversed(registry):
            try:
                results.append(backend.teardown(res, ctx(clock, registry, 3600)))
            except DrillError as exc:
                errors.append(exc)
    return Outcome(error, registry, results, errors, marks, endpoint)


def drill_leftovers(session: Any) -> list[str]:
    """Every resource named like a drill's, whatever its tags."""
    rds = session.client("rds", region_name=REGION)
    ec2 = session.client("ec2", region_name=REGION)
    out = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]]
    out += [c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]]
    out += [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]]
    out += [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
    return sorted(x for x in out if x.startswith("drill-"))


Check = Callable[[], None]


def keep_all(backend: Any, clock: FakeClock, registry: list[Resource], seconds: float) -> list[str]:
    """What the machine does for a passed drill run with ``--keep``: each resource kept until now + seconds."""
    until = clock.now() + timedelta(seconds=seconds)
    return [backend.keep(r, ctx(clock, registry, 3600), until) for r in registry]
