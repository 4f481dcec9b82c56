"""`drill export-asl` executed in moto Step Functions, answered by the real `drill sfn-worker`.

moto runs the definition in a thread and its ``aws-sdk:rds`` tasks call the mocked RDS. The
machine hands this project's own work to the worker through SQS with a task token; the worker
(:class:`drills.sfn_worker.Worker`, in a thread of the test) runs preflight, the drill on the
restored instance and the evidence, exactly as ``drill sfn-worker`` does. The restored
instance's data plane is the real local PostgreSQL (:mod:`dataplane`: the runbook's ``connect``
reaches it through a loopback tunnel), so the validators really run; its master user takes the
password RDS keeps in Secrets Manager (``ManageMasterUserPassword``) when the worker reads it.
Waits are 1 s instead of the 10 s to 150 s schedule.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from dataplane import PgPlane, set_master_password
from moto import mock_aws

from drills.asl import build_definition, poll_schedule
from drills.evidence.keys import generate_keypair
from drills.evidence.store import evidence_path
from drills.runbook import load_runbook
from drills.sfn_worker import Worker

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class World:
    session: Any  # the test's and the machine's AWS
    worker_session: Any  # the worker's own (as on another machine), watched by the data plane
    root: Path
    runbook: Path
    sg: str
    queue: str
    plane: PgPlane
    secrets_read: list[tuple[str, str]]  # (secret id, password) the worker read
    sent_failures: list[dict[str, Any]]  # SendTaskFailure as the worker sent it (moto 5.2.1 drops `cause`)

    @property
    def pub(self) -> Path:
        return self.root / "keys" / "drill.pub"

    def write_runbook(
        self, *, snapshot: str = "prod-snap", rows: int = 3, name: str = "orders-sfn", sleep_s: float = 0
    ) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(
            textwrap.dedent(
                f"""\
                name: {name}
                source:
                  kind: rds-snapshot
                  region: {REGION}
                  engine: postgres
                  snapshot: {snapshot}
                  instance_class: db.t4g.micro
                  database: {self.plane.database}
                  isolation: {{db_subnet_group: isolated, security_group_ids: [{self.sg}], subnet_ids: []}}
                objectives: {{rto_seconds: 600}}
                connect: {{host: 127.0.0.1, port: {self.plane.tunnel.port}}}
                validators:
                  row_counts: {{orders: {{equals: {rows}}}}}
                  smoke: [{{name: slow, sql: "select count(*) from (select pg_sleep({sleep_s})) s", expect: 1}}]
                evidence: {{dir: evidence, signing_key: keys/drill.key}}
                """
            )
        )
        return path


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, plane: PgPlane) -> Iterator[World]:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
    generate_keypair(tmp_path / "keys" / "drill.key")
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s = boto3.Session(region_name=REGION)
        ec2, rds = s.client("ec2"), s.client("rds")
        vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"][
                "SubnetId"
            ]
            for i, z in ((1, "a"), (2, "b"))
        ]
        sg = ec2.create_security_group(GroupName="drill-db", Description="drill", VpcId=vpc)["GroupId"]
        rds.create_db_subnet_group(DBSubnetGroupName="isolated", DBSubnetGroupDescription="x", SubnetIds=subnets)
        rds.create_db_instance(
            DBInstanceIdentifier="prod-db",
            Engine="postgres",
            DBInstanceClass="db.t4g.micro",
            MasterUsername=plane.master,
            MasterUserPassword=plane.prod_password,
            AllocatedStorage=20,
        )
        rds.create_db_snapshot(DBInstanceIdentifier="prod-db", DBSnapshotIdentifier="prod-snap")
        queue = s.client("sqs").create_queue(QueueName="restore-drill-tasks")["QueueUrl"]
        worker_session = boto3.Session(region_name=REGION)
        read: list[tuple[str, str]] = []

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["secret_id"] = params.get("SecretId")

        def managed_password_applies(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            # what RDS did when it applied ManageMasterUserPassword: the database takes the secret's password
            if "SecretString" in parsed:
                password = json.loads(parsed["SecretString"])["password"]
                read.append((str(context.get("secret_id")), password))
                set_master_password(plane.server, plane.master, password)

        worker_session.events.register("before-parameter-build.secrets-manager.GetSecretValue", remember)
        worker_session.events.register("after-call.secrets-manager.GetSecretValue", managed_password_applies)
        sent: list[dict[str, Any]] = []
        worker_session.events.register(
            "provide-client-params.sfn.SendTaskFailure", lambda params, **_: sent.append(dict(params))
        )
        w = World(s, worker_session, tmp_path, tmp_path / "orders-sfn.yaml", sg, queue, plane, read, sent)
        w.write_runbook()
        yield w


def drill_instances(session: Any) -> list[dict[str, Any]]:
    dbs = session.client("rds").describe_db_instances()["DBInstances"]
    return [d for d in dbs if d["DBInstanceIdentifier"].startswith("drill-")]


def run_execution(w: World, definition: dict[str, Any], worker: Worker, timeout: float = 120) -> dict[str, Any]:
    """Start one execution with the real worker serving the queue in a thread; wait for the end."""
    sfn = w.session.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"drill-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
    )["stateMachineArn"]
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    try:
        name = f"run-{uuid.uuid4().hex[:10]}"
        ex = sfn.start_execution(stateMachineArn=arn, name=name, input="{}")["executionArn"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = sfn.describe_execution(executionArn=ex)
            if out["status"] != "RUNNING":
                out["history"] = sfn.get_execution_history(executionArn=ex, maxResults=1000)["events"]
                out["name"] = name
                return dict(out)
            time.sleep(0.1)
        raise AssertionError(f"the execution did not finish in {timeout} s; the worker handled {worker.handled}")
    finally:
        worker.stop.set()
        serving.join(10)
        assert not serving.is_alive(), "the worker did not stop"


def execute(w: World, runbook: Path | None = None, **definition: Any) -> tuple[dict[str, Any], Worker]:
    loaded = load_runbook(runbook or w.runbook, check_paths=False)
    asl = build_definition(
        loaded,
        queue_url=w.queue,
        runbook_uri=str(runbook or w.runbook),
        dialect="boto",
        schedule=[1] * 50,
        **definition,
    )
    worker = Worker(w.worker_session, w.queue, [w.root], wait_seconds=1)
    return run_execution(w, asl, worker), worker


def entered(result: dict[str, Any]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in result["history"] if "stateEnteredEventDetails" in e]


def entered_at(result: dict[str, Any], name: str) -> Any:
    return next(e["timestamp"] for e in result["history"] if e.get("stateEnteredEventDetails", {}).get("name") == name)


def verified_record(w: World, run_id: str) -> dict[str, Any]:
    """The run's evidence, verified by `drill verify` as an auditor would, then read."""
    path = evidence_path(w.root / "evidence", run_id)
    assert path.exists(), sorted(p.name for p in (w.root / "evidence").glob("*"))
    done = subprocess.run(
        [sys.executable, "-m", "drills.cli", "verify", str(path), "--key", str(w.pub)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import base64

    envelope = json.loads(path.read_text())
    predicate: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    return predicate


def failures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The worker's SendTaskFailure answers, as the execution's history shows them (error only in moto)."""
    events = [e.get("taskFailedEventDetails") or {} for e in result["history"]]
    return [e for e in events if e.get("resource") == "sendMessage.waitForTaskToken"]


def test_a_passing_drill_is_validated_by_the_worker_on_real_data_then_torn_down(world: World) -> None:
    bodies: list[str] = []
    world.worker_session.events.register(
        "after-call.sqs.ReceiveMessage",
        lambda parsed, **_: bodies.extend(m["Body"] for m in parsed.get("Messages", [])),
    )
    tags_seen: list[list[dict[str, str]]] = []  # the restored instance's tags, as the worker read them
    world.worker_session.events.register(
        "after-call.rds.DescribeDBInstances",
        lambda parsed, **_: tags_seen.extend(d["TagList"] for d in parsed.get("DBInstances", []) if "drill-" in str(d)),
    )
    started = datetime.now(UTC)
    res, worker = execute(world)
    assert res["status"] == "SUCCEEDED", (res.get("error"), res.get("cause"), failures(res), worker.handled)
    assert worker.handled == [("preflight", True), ("validate", True), ("evidence", True)]
    assert drill_instances(world.session) == []
    assert world.session.client("rds").describe_db_instances(DBInstanceIdentifier="prod-db")["DBInstances"]
    # the worker read the password RDS manages for the restored instance, not one of its own
    assert len(world.secrets_read) == 1 and ":secret:rds!db-" in world.secrets_read[0][0]
    record = verified_record(world, res["name"])
    assert record["results"]["verdict"] == "passed"
    md5 = hashlib.md5(res["name"].encode()).hexdigest()  # noqa: S324 - an identifier, not security
    instance = f"drill-orders-sfn-{md5}"
    text = json.dumps(record)
    assert instance in text and record["drill"]["id"] == res["name"]
    counted = [f for f in record["validation"]["findings"] if f["validator"] == "row_counts"]
    assert counted and all(f["passed"] for f in counted) and counted[0]["actual"] == 3
    # the RTO counts from the execution's restore request, not from when the worker got the drill
    before_worker_ms = (entered_at(res, "Validate") - entered_at(res, "Restore")).total_seconds() * 1000
    assert record["results"]["achieved_rto_ms"] >= before_worker_ms >= 2000  # two waits of 1 s at least
    torn = [t for t in record["teardown"]["resources"] if t["id"] == instance]
    assert torn and torn[0]["deleted"] is True and record["teardown"]["all_deleted"] is True
    # `drill sweep` leaves a live drill's instance alone: it expires after the deadline and teardown's hour
    from drills.aws.sweep import _candidate, _decide

    tags = {t["Key"]: t["Value"] for t in tags_seen[0]}
    expires = datetime.fromisoformat(tags["restore-drills:expires-at"].replace("Z", "+00:00"))
    assert started + timedelta(seconds=1800 + 3600) <= expires <= datetime.now(UTC) + timedelta(seconds=1800 + 3600)
    assert tags["restore-drills:run-id"] == res["name"] and tags["restore-drills:created-by"] == "step-functions"
    live = _candidate("rds-instance", instance, tags_seen[0])
    assert live is not None and _decide(live, datetime.now(UTC), timedelta(0), lambda _run: False) is not None
    # SQS delivers at least once: the validate message again, after its answer, must not drill again
    (validate,) = [b for b in bodies if json.loads(b)["phase"] == "validate"]
    world.session.client("sqs").send_message(QueueUrl=world.queue, MessageBody=validate)
    again = Worker(world.worker_session, world.queue, [world.root], wait_seconds=1)
    again.serve(once=True)
    assert again.dropped == ["validate"] and again.handled == []
    assert len(list((world.root / "evidence").glob("*.evidence.json"))) == 1


def test_a_failing_validator_fails_the_task_goes_through_catch_to_teardown_and_is_recorded(world: World) -> None:
    world.write_runbook(rows=4)  # the snapshot holds 3 orders
    res, worker = execute(world)
    assert res["status"] == "FAILED" and res["error"] == "DrillFailed"
    assert worker.handled == [("preflight", True), ("validate", False), ("evidence", True)]
    (failed,) = failures(res)
    (sent,) = world.sent_failures
    assert failed["error"] == sent["error"] == "DrillFailed"
    assert "orders" in sent["cause"] and str(evidence_path(world.root / "evidence", res["name"])) in sent["cause"]
    ((_, password),) = world.secrets_read
    assert (
        password not in sent["cause"]
        and password not in evidence_path(world.root / "evidence", res["name"]).read_text()
    )
    states = entered(res)
    assert states.index("Validate") < states.index("Teardown") < states.index("Evidence")
    assert drill_instances(world.session) == []
    record = verified_record(world, res["name"])
    assert record["results"]["verdict"] == "failed"


def test_a_failing_restore_is_caught_torn_down_and_the_worker_records_why(world: World) -> None:
    from unittest import mock

    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend

    def refused(self: Any, *a: Any, **k: Any) -> Any:
        raise RDSClientError("InsufficientDBInstanceCapacity", "no capacity for db.t4g.micro (injected)")

    with mock.patch.object(RDSBackend, "restore_db_instance_from_db_snapshot", refused):
        res, worker = execute(world)
    assert res["status"] == "FAILED"
    states = entered(res)
    assert "Restore" in states and "Teardown" in states and "Validate" not in states
    assert worker.handled == [("preflight", True), ("evidence", True)]
    assert drill_instances(world.session) == []
    record = verified_record(world, res["name"])
    assert record["results"]["verdict"] != "passed"
    assert "InsufficientDBInstanceCapacity" in json.dumps(record)


def test_a_refused_preflight_creates_nothing_and_names_why(world: World) -> None:
    world.write_runbook(snapshot="no-such-snap")
    res, worker = execute(world)
    assert res["status"] == "FAILED" and res["error"] == "PreflightFailed"
    assert "Restore" not in entered(res)
    assert worker.handled == [("preflight", False)]
    (failed,) = failures(res)
    (sent,) = world.sent_failures
    assert failed["error"] == sent["error"] == "PreflightError" and "no-such-snap" in sent["cause"]
    assert drill_instances(world.session) == []


def test_the_instance_id_comes_from_the_execution_name_never_from_its_input(world: World) -> None:
    import json

    loaded = load_runbook(world.runbook, check_paths=False)
    asl = build_definition(loaded, queue_url="https://sqs/q", runbook_uri="s3://b/k")
    text = json.dumps(asl)
    assert "$$.Execution.Input" not in text
    assert asl["States"]["Init"]["Parameters"]["instance_id.$"] == (
        "States.Format('drill-orders-sfn-{}', States.Hash($$.Execution.Name, 'MD5'))"
    )
    for name, state in asl["States"].items():
        for key, value in (state.get("Parameters") or {}).items():
            if ("InstanceIdentifier" in key and name != "Restore") or key.startswith("DbInstanceIdentifier"):
                assert value == "$.drill.instance_id", (name, key, value)


def test_the_definition_is_well_formed_and_every_path_after_the_restore_reaches_teardown(world: World) -> None:
    loaded = load_runbook(world.runbook, check_paths=False)
    asl = build_definition(loaded, queue_url="https://sqs/q", runbook_uri="s3://b/k")
    states: dict[str, Any] = asl["States"]

    def nexts(s: dict[str, Any]) -> set[str]:
        out = {s["Next"]} if "Next" in s else set()
        out |= {c["Next"] for c in s.get("Choices", [])} | ({s["Default"]} if "Default" in s else set())
        return out | {c["Next"] for c in s.get("Catch", [])}

    assert asl["StartAt"] in states
    for name, s in states.items():
        assert s["Type"] in {"Task", "Pass", "Wait", "Choice", "Succeed", "Fail"}, name
        assert nexts(s) <= set(states), (name, nexts(s) - set(states))
        assert bool(nexts(s)) != (s["Type"] in {"Succeed", "Fail"}), name
    reachable, todo = set(), [asl["StartAt"]]
    while todo:
        cur = todo.pop()
        if cur not in reachable:
            reachable.add(cur)
            todo += nexts(states[cur])
    assert reachable == set(states)

    def reaches_teardown(start: str) -> bool:  # every way out leads through Teardown
        seen, todo = set(), [start]
        while todo:
            cur = todo.pop()
            if cur == "Teardown" or cur in seen:
                continue
            seen.add(cur)
            if states[cur]["Type"] in {"Succeed", "Fail"}:
                return False
            todo += nexts(states[cur])
        return True

    after_restore = [n for n in states if n.startswith(("Restore", "Isolate", "Modify", "Validate", "Passed"))]
    assert after_restore and all(reaches_teardown(n) for n in after_restore)
    for n in after_restore:
        if states[n]["Type"] == "Task":
            assert any(c["ErrorEquals"] == ["States.ALL"] for c in states[n]["Catch"]), n
    # the AWS dialect names members as Step Functions does (AWS SDK for Java v2)
    p = states["Restore"]["Parameters"]
    assert {"DbInstanceIdentifier.$", "DbSnapshotIdentifier", "DbInstanceClass", "DbSubnetGroupName"} <= set(p)
    assert states["RestoreDescribe"]["ResultSelector"]["status.$"] == (
        "States.ArrayGetItem($.DbInstances[*].DbInstanceStatus, 0)"
    )


def test_the_waits_grow_as_the_local_machine_s_do() -> None:
    # 10 s at first, then 20 % of the time already waited, at most 150 s
    assert poll_schedule(7200)[:11] == [10, 10, 10, 10, 10, 10, 12, 14, 17, 20, 24]
    assert max(poll_schedule(7200)) == 150
    assert sum(poll_schedule(7200)[:-1]) < 7200 <= sum(poll_schedule(7200))


def test_export_asl_writes_the_definition_and_the_role_policy(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out, policy = tmp_path / "drill.asl.json", tmp_path / "role.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "drills.cli",
            "export-asl",
            str(root / "runbooks" / "aws-rds-stepfunctions.yaml"),
            "--out",
            str(out),
            "--queue-url",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/restore-drill-tasks",
            "--role-policy",
            str(policy),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    asl = json.loads(out.read_text())
    assert asl["States"]["Restore"]["Parameters"]["DbSnapshotIdentifier"] == "rds:orders-prod-2026-11-30-03-10"
    assert asl["TimeoutSeconds"] == 3 * 3600 + 3600 + 600  # the drill deadline, teardown's hour, slack
    actions = {
        a
        for s in json.loads(policy.read_text())["Statement"]
        for a in [s["Action"]]
        for a in ([a] if isinstance(a, str) else a)
    }
    assert "rds:DeleteDBInstance" in actions and not any(
        a.startswith(("rds:DeleteDBSnapshot", "rds:*")) for a in actions
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "drills.cli",
            "export-asl",
            str(root / "runbooks" / "aws-rds-snapshot.yaml"),
            "--out",
            str(out),
            "--queue-url",
            "q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "db_subnet_group" in bad.stderr


# ---------------------------------------------------------------- heartbeats and SIGTERM


def sent_calls(w: World, op: str) -> list[float]:
    """When the worker made each ``op`` call (monotonic seconds)."""
    seen: list[float] = []
    w.worker_session.events.register(f"before-call.sfn.{op}", lambda **_: seen.append(time.monotonic()))
    return seen


def test_heartbeats_keep_a_validation_longer_than_heartbeat_seconds_alive(world: World) -> None:
    world.write_runbook(sleep_s=4.5)  # a validator that outlasts HeartbeatSeconds=3 by half
    beats = sent_calls(world, "SendTaskHeartbeat")
    res, worker = execute(world, heartbeat_seconds=3)  # the worker beats every second
    assert res["status"] == "SUCCEEDED", (res.get("error"), failures(res), worker.handled)
    assert worker.handled == [("preflight", True), ("validate", True), ("evidence", True)]
    assert len(beats) >= 3
    assert not [e for e in res["history"] if "TimedOut" in e["type"]]


def test_sigterm_answers_worker_stopped_and_the_execution_tears_down_through_catch(world: World) -> None:
    import os
    import signal

    world.write_runbook(sleep_s=60)  # still running when ECS stops the task
    loaded = load_runbook(world.runbook, check_paths=False)
    asl = build_definition(
        loaded, queue_url=world.queue, runbook_uri=str(world.runbook), dialect="boto", schedule=[1] * 50
    )
    sfn = world.session.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="drill-sigterm", definition=json.dumps(asl), roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn"
    )["stateMachineArn"]
    name = f"run-{uuid.uuid4().hex[:10]}"
    ex = sfn.start_execution(stateMachineArn=arn, name=name, input="{}")["executionArn"]
    got_validate = threading.Event()

    def seen(parsed: dict[str, Any], **_: Any) -> None:
        if any(json.loads(m["Body"])["phase"] == "validate" for m in parsed.get("Messages", [])):
            got_validate.set()

    world.worker_session.events.register("after-call.sqs.ReceiveMessage", seen)
    signalled: list[float] = []

    def stop_the_task() -> None:  # what ECS does: SIGTERM to the worker, mid-validation
        if got_validate.wait(60):
            time.sleep(2.5)
            signalled.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    stray = signal.signal(signal.SIGTERM, lambda *_: None)  # a late SIGTERM must never kill pytest
    try:
        killer = threading.Thread(target=stop_the_task, daemon=True)
        killer.start()
        worker = Worker(world.worker_session, world.queue, [world.root], wait_seconds=1)
        worker.serve()  # in the main thread, as `drill sfn-worker` runs: returns once stopped
        stopped_at = time.monotonic()
        killer.join(5)
    finally:
        signal.signal(signal.SIGTERM, stray)
    assert signalled, "the validate task never reached the worker"
    print(f"worker answered and stopped {stopped_at - signalled[0]:.2f}s after SIGTERM")
    assert stopped_at - signalled[0] < 10, "the worker must stop well within ECS's grace period"
    assert worker.handled == [("preflight", True), ("validate", False)]
    assert [f["error"] for f in world.sent_failures] == ["WorkerStopped"]
    record = verified_record(world, name)  # the interrupted drill tore down and signed before answering
    assert record["interrupted"] is True and record["results"]["verdict"] != "passed"
    # the execution went through Catch to Teardown and now waits for its evidence: another worker answers
    after = Worker(world.worker_session, world.queue, [world.root], wait_seconds=1)
    deadline = time.monotonic() + 60
    while sfn.describe_execution(executionArn=ex)["status"] == "RUNNING" and time.monotonic() < deadline:
        after.serve(once=True)
    out = sfn.describe_execution(executionArn=ex)
    history = sfn.get_execution_history(executionArn=ex, maxResults=1000)["events"]
    states = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    assert out["status"] == "FAILED" and states.index("Validate") < states.index("Teardown")
    assert after.handled == [("evidence", True)]
    assert drill_instances(world.session) == []


# ---------------------------------------------------------------- a fleet: a Map over runbooks


def test_a_fleet_map_drills_each_runbook_tears_each_down_and_fails_naming_the_failed_one(world: World) -> None:
    from drills.asl_fleet import build_fleet_definition

    paths = [world.write_runbook(name="fleet-a"), world.write_runbook(name="fleet-b", rows=4)]
    paths.append(world.write_runbook(name="fleet-c"))
    asl = build_fleet_definition(
        [load_runbook(p, check_paths=False) for p in paths],
        queue_url=world.queue,
        runbook_uris=[str(p) for p in paths],
        max_concurrency=2,
        dialect="boto",
        schedule=[1] * 50,
    )
    assert asl["States"]["Drills"]["Type"] == "Map" and asl["States"]["Drills"]["MaxConcurrency"] == 2
    worker = Worker(world.worker_session, world.queue, [world.root], wait_seconds=1)
    res = run_execution(world, asl, worker, timeout=240)
    assert res["status"] == "FAILED" and res["error"] == "FleetFailed", (res.get("error"), worker.handled)
    assert drill_instances(world.session) == []
    assert sorted(worker.handled).count(("validate", True)) == 2 and ("validate", False) in worker.handled
    results = json.loads(
        next(e for e in res["history"] if e["type"] == "MapStateExited")["stateExitedEventDetails"]["output"]
    )["results"]
    assert [(r["runbook"], r["verdict"]) for r in results] == [
        ("fleet-a", "passed"),
        ("fleet-b", "failed"),
        ("fleet-c", "passed"),
    ]
    # each iteration is its own run: its own instance (restored, then gone), journal and signed record
    for name, verdict in (("fleet-a", "passed"), ("fleet-b", "failed"), ("fleet-c", "passed")):
        run_id = f"{res['name']}-{name}"
        record = verified_record(world, run_id)
        assert record["results"]["verdict"] == verdict and record["runbook"]["name"] == name
        md5 = hashlib.md5(run_id.encode()).hexdigest()  # noqa: S324 - an identifier, not security
        assert [t["deleted"] for t in record["teardown"]["resources"] if t["id"] == f"drill-{name}-{md5}"] == [True]
    # never more than two drills at once
    live, most = 0, 0
    for e in res["history"]:
        if e["type"] == "MapIterationStarted":
            live += 1
            most = max(most, live)
        elif e["type"] in ("MapIterationSucceeded", "MapIterationFailed", "MapIterationAborted"):
            live -= 1
    assert most <= 2 and sum(e["type"] == "MapIterationStarted" for e in res["history"]) == 3


def test_a_fleet_definition_is_well_formed_and_refuses_colliding_runbooks(world: World, tmp_path: Path) -> None:
    from drills.asl_fleet import build_fleet_definition
    from drills.errors import InputError

    paths = [world.write_runbook(name="fleet-a"), world.write_runbook(name="fleet-b")]
    asl = build_fleet_definition(
        [load_runbook(p, check_paths=False) for p in paths],
        queue_url="https://sqs/q",
        runbook_uris=["a", "b"],
        max_concurrency=1,
    )
    inner = asl["States"]["Drills"]["ItemProcessor"]["States"]
    assert not [n for n, s in inner.items() if s["Type"] in ("Fail", "Succeed")]  # a Fail would abort the others
    for name, s in inner.items():
        refs = {s.get("Next"), s.get("Default")} | {c["Next"] for c in s.get("Choices", []) + s.get("Catch", [])}
        assert refs - {None} <= set(inner), (name, refs - set(inner))
    inits = [s["Parameters"]["run_id.$"] for n, s in inner.items() if n.endswith(".Init")]
    assert inits == [f"States.Format('{{}}-{{}}', $$.Execution.Name, '{n}')" for n in ("fleet-a", "fleet-b")]
    assert "$$.Execution.Input" not in json.dumps(asl) and "$.runbooks" not in json.dumps(asl)
    twin = world.write_runbook(name="fleet-aaaaaaaaaaaaaaaaaaaaaa-1")
    other = world.write_runbook(name="fleet-aaaaaaaaaaaaaaaaaaaaaa-2")  # same first 24 characters
    with pytest.raises(InputError, match="same instance names"):
        build_fleet_definition(
            [load_runbook(p, check_paths=False) for p in (twin, other)],
            queue_url="q",
            runbook_uris=["x", "y"],
            max_concurrency=2,
        )


def test_export_asl_fleet_writes_a_map_and_several_runbooks_need_the_flag(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    example = (root / "runbooks" / "aws-rds-stepfunctions.yaml").read_text()
    paths = []
    for name in ("orders-eu", "billing-eu"):
        p = tmp_path / f"{name}.yaml"
        p.write_text(example.replace("name: orders-sfn", f"name: {name}"))
        paths.append(str(p))
    out = tmp_path / "fleet.asl.json"

    def export(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "drills.cli", "export-asl", *args, "--out", str(out), "--queue-url", "q"]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    done = export("--fleet", *paths, "--max-concurrency", "1")
    assert done.returncode == 0, done.stderr
    drills = json.loads(out.read_text())["States"]["Drills"]
    assert drills["Type"] == "Map" and drills["MaxConcurrency"] == 1
    assert {"orders-eu.Restore", "billing-eu.Restore"} <= set(drills["ItemProcessor"]["States"])
    refused = export(*paths)
    assert refused.returncode == 2 and "--fleet" in refused.stderr
