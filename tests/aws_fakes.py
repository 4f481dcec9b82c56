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
and source databases with snapshots; :func:`machine_drill` runs a backend through
the real machine (``run_drill`` → ``run_machine``), its validators against a real
local PostgreSQL (:mod:`dataplane`).
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
import yaml
from botocore.exceptions import ClientError
from dataplane import PgPlane

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings, Mark, StepContext
from drills.cleanup import SCRATCH_KIND
from drills.clock import FakeClock
from drills.errors import DrillError
from drills.journal import list_runs, read_events, state_home
from drills.resources import Resource, TeardownResult
from drills.runbook import load_runbook
from validators.endpoint import Endpoint

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
            modified = str(obj.get("DBInstanceIdentifier") or obj.get("DBClusterIdentifier"))
            self._modifying_until[modified] = now + timedelta(seconds=self.modify_seconds)
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
    session: Any,
    clock: FakeClock,
    run_id: str = "run-0001",
    runbook: str = "orders",
    run_dir: Path | None = None,
    **kw: Any,
) -> BackendSettings:
    """An AWS backend's settings; its run directory is never created (AWS backends keep nothing locally)."""
    where = run_dir or Path(tempfile.gettempdir()) / f"restore-drill-{run_id}"
    return BackendSettings(run_id=run_id, run_dir=where, clock=clock, runbook_name=runbook, aws_session=session, **kw)


def ctx(clock: FakeClock, registry: list[Resource], seconds: float = 4 * 3600) -> StepContext:
    """A step context for calling one backend method directly (preflight refusals, teardown from a record)."""
    return StepContext(
        clock=clock,
        deadline_ns=clock.monotonic_ns() + int(seconds * 1e9),
        log=structlog.get_logger(),
        register=registry.append,
    )


class RunnerKilled(BaseException):
    """The runner dies (SIGKILL) as teardown begins: nothing after it runs; the journal is what is left."""


@dataclass
class Outcome:
    """A drill run by :func:`drills.machine.run_machine` (through ``run_drill``), as the tests look at it."""

    error: DrillError | str | None  # the drill's error; after a kill, the failed state's error from the journal
    registry: list[Resource]  # this backend's resources, in the order they were registered
    teardown: list[TeardownResult]
    teardown_errors: list[str]
    marks: list[Mark]
    endpoint: Endpoint | None  # what the backend handed to the connect state (before the validators' role)
    result: RunResult | None  # None when the runner was killed
    isolation: list[dict[str, Any]] = field(default_factory=list)  # the facts the machine recorded, as in evidence

    @property
    def verdict(self) -> str | None:
        return self.result.verdict if self.result else None


def machine_drill(
    backend: Any,
    session: Any,
    clock: FakeClock,
    plane: PgPlane,
    tmp: Path,
    *,
    deadline_seconds: int | None = None,
    keep_seconds: int | None = None,
    killed_at_teardown: bool = False,
    run_waits: bool = False,
    progress: Any = None,
) -> Outcome:
    """Run ``backend`` through the real machine: a runbook for its source, ``run_drill`` on the fake clock, the
    validators against the real local PostgreSQL of ``plane`` (reached through the runbook's ``connect``).

    ``killed_at_teardown``: the runner dies before removing anything; the outcome is read from its journal, as
    ``drill runs`` / ``drill teardown`` would.

    ``run_waits``: the pre-built backend takes the restore poll policy the run built from the
    runbook's history (and its progress hook), as a backend the run's factory builds would; without
    it, the backend keeps its own settings (``settings(..., restore_poll=...)`` passes one directly).
    ``progress``: the run's ``on_poll`` (RunOptions.progress).
    """
    assert backend.source.database == plane.database, "build the source with database=plane.database"
    plane.watch(session.events)
    plane.watch(backend.client("rds").meta.events)  # made before: its own copy
    handed: list[Endpoint] = []
    real_endpoint = backend.endpoint

    def endpoint(ready: Any, c: StepContext) -> Endpoint:
        ep: Endpoint = real_endpoint(ready, c)
        handed.append(ep)
        return ep

    def killed(_r: Resource, _c: StepContext) -> TeardownResult:
        raise RunnerKilled

    backend.endpoint = endpoint
    if killed_at_teardown:
        backend.teardown = killed
    doc: dict[str, Any] = {
        "name": backend.settings.runbook_name,
        "source": backend.source.model_dump(mode="json", exclude_none=True),
        "objectives": {"rto_seconds": 4 * 3600},
        **plane.runbook_fields(),
        "evidence": {"dir": str(tmp / "evidence")},
    }
    if deadline_seconds is not None:
        doc["deadline_seconds"] = deadline_seconds
    path = tmp / f"runbook-{backend.settings.run_id}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    own_settings = backend.settings

    def factory(_source: Any, run_settings: BackendSettings) -> Any:
        if run_waits:
            backend.settings = replace(
                own_settings, restore_poll=run_settings.restore_poll, on_poll=run_settings.on_poll
            )
        return backend

    options = RunOptions(
        clock=clock,
        aws_session=session,
        keep_seconds=keep_seconds,
        scratch_root=tmp,
        backend_factory=factory,
        progress=progress,
    )
    before = {r.run_id for r in list_runs()}
    try:
        res = run_drill(load_runbook(path), options)
    except RunnerKilled:
        return _from_journal(before, handed)
    finally:
        backend.settings = own_settings
        del backend.endpoint
        if killed_at_teardown:
            del backend.teardown
    d = res.drill
    return Outcome(
        error=d.error,
        registry=[r for r in d.resources if r.kind != SCRATCH_KIND],
        teardown=[t for t in d.teardown_results if t.resource.kind != SCRATCH_KIND],
        teardown_errors=d.teardown_errors,
        marks=d.marks,
        endpoint=handed[-1] if handed else None,
        result=res,
        isolation=[f.to_dict() for f in d.isolation],
    )


def _from_journal(before: set[str], handed: list[Endpoint]) -> Outcome:
    """A killed run: what its journal says (the resources still outstanding, the states that failed)."""
    (run,) = [r for r in list_runs() if r.run_id not in before]
    events = read_events(state_home() / "runs" / run.run_id / "journal.jsonl")
    failed = [e.get("error") for e in events if e["event"] == "state_exited" and e.get("outcome") == "error"]
    return Outcome(
        error=failed[0] if failed else None,
        registry=[r for r in run.outstanding if r.kind != SCRATCH_KIND],
        teardown=[],
        teardown_errors=[],
        marks=[],
        endpoint=handed[-1] if handed else None,
        result=None,
    )


def drill_leftovers(session: Any) -> list[str]:
    """Every resource named like a drill's, whatever its tags."""
    rds = session.client("rds", region_name=REGION)
    ec2 = session.client("ec2", region_name=REGION)
    out = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]]
    out += [c["DBClusterIdentifier"] for c in rds.describe_db_clusters()["DBClusters"]]
    out += [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]]
    out += [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
    return sorted(x for x in out if x.startswith("drill-"))
