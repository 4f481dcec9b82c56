"""`drill export-asl`: the exported state machine really executes (moto Step Functions on moto RDS and ECS).

moto runs the definition in a thread and its ``aws-sdk:rds`` tasks call the
mocked RDS. The machine hands this project's own work to a worker through
SQS with a task token; here the test plays the worker: it takes each
message, looks at the world as the worker would (the restored instance, its
settings and tags) and answers with the exit code. Waits are 1 s instead of
the 10 s to 150 s schedule.
"""

from __future__ import annotations

import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from drills.asl import build_definition, poll_schedule
from drills.runbook import load_runbook

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class World:
    session: Any
    runbook: Path
    sg: str
    queue: str
    seen: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)  # (phase, drill instance then)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(k, v)
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
            MasterUsername="admin",
            MasterUserPassword="prod-password-1",
            AllocatedStorage=20,
        )
        rds.create_db_snapshot(DBInstanceIdentifier="prod-db", DBSnapshotIdentifier="prod-snap")
        queue = s.client("sqs").create_queue(QueueName="restore-drill-tasks")["QueueUrl"]
        (tmp_path / "rb.yaml").write_text(
            textwrap.dedent(
                f"""\
                name: orders-sfn
                source:
                  kind: rds-snapshot
                  region: {REGION}
                  engine: postgres
                  snapshot: prod-snap
                  instance_class: db.t4g.micro
                  database: orders
                  isolation: {{db_subnet_group: isolated, security_group_ids: [{sg}], subnet_ids: []}}
                objectives: {{rto_seconds: 600}}
                """
            )
        )
        yield World(s, tmp_path / "rb.yaml", sg, queue)


def drill_instances(session: Any) -> list[dict[str, Any]]:
    dbs = session.client("rds").describe_db_instances()["DBInstances"]
    return [d for d in dbs if d["DBInstanceIdentifier"].startswith("drill-")]


def play_worker(w: World, exit_codes: dict[str, int], stop: threading.Event) -> None:
    """Be `drill sfn-worker`: take each message, look, answer with the phase's exit code."""
    import json

    sqs, sfn = w.session.client("sqs"), w.session.client("stepfunctions")
    while not stop.is_set():
        for m in sqs.receive_message(QueueUrl=w.queue, MaxNumberOfMessages=10).get("Messages", []):
            body = json.loads(m["Body"])
            found = drill_instances(w.session)
            assert not found or found[0]["DBInstanceIdentifier"] == body["instance_id"]
            w.seen.append((body["phase"], found[0] if found else None))
            sfn.send_task_success(
                taskToken=body["task_token"], output=json.dumps({"exit_code": exit_codes.get(body["phase"], 0)})
            )
            sqs.delete_message(QueueUrl=w.queue, ReceiptHandle=m["ReceiptHandle"])
        time.sleep(0.05)


def execute(w: World, exit_codes: dict[str, int] | None = None, **definition: Any) -> dict[str, Any]:
    import json

    loaded = load_runbook(w.runbook, check_paths=False)
    asl = build_definition(
        loaded,
        queue_url=w.queue,
        runbook_uri="s3://drill-config/orders-sfn.yaml",
        dialect="boto",
        schedule=[1] * 50,
        **definition,
    )
    sfn = w.session.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"drill-{uuid.uuid4().hex[:8]}", definition=json.dumps(asl), roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn"
    )["stateMachineArn"]
    stop = threading.Event()
    player = threading.Thread(target=play_worker, args=(w, exit_codes or {}, stop), daemon=True)
    player.start()
    try:
        name = f"run-{uuid.uuid4().hex[:10]}"
        ex = sfn.start_execution(stateMachineArn=arn, name=name, input="{}")["executionArn"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            out = sfn.describe_execution(executionArn=ex)
            if out["status"] != "RUNNING":
                out["history"] = sfn.get_execution_history(executionArn=ex, maxResults=1000)["events"]
                out["name"] = name
                return dict(out)
            time.sleep(0.1)
        raise AssertionError("the execution did not finish in 90 s")
    finally:
        stop.set()
        player.join(5)


def entered(result: dict[str, Any]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in result["history"] if "stateEnteredEventDetails" in e]


def test_a_passing_drill_restores_isolated_validates_then_deletes_the_instance(world: World) -> None:
    res = execute(world)
    assert res["status"] == "SUCCEEDED", (
        res.get("error"),
        res.get("cause"),
        [e for e in res["history"] if "Failed" in e["type"] or "Succeeded" in e["type"]][:5],
    )
    assert [p for p, _ in world.seen] == ["preflight", "validate", "evidence"]
    assert world.seen[0][1] is None  # preflight ran before anything existed
    during = world.seen[1][1]  # what the validate task found
    import hashlib

    md5 = hashlib.md5(res["name"].encode()).hexdigest()  # noqa: S324 - an identifier, not security
    assert during is not None and during["DBInstanceIdentifier"] == f"drill-orders-sfn-{md5}"
    assert len(during["DBInstanceIdentifier"]) <= 63
    assert during["PubliclyAccessible"] is False
    assert {t["Key"]: t["Value"] for t in during["TagList"]}["restore-drills:run-id"] == res["name"]
    assert world.seen[2][1] is None  # evidence is written after teardown
    assert drill_instances(world.session) == []
    assert world.session.client("rds").describe_db_instances(DBInstanceIdentifier="prod-db")["DBInstances"]


def test_failed_validation_still_tears_down_and_the_execution_fails(world: World) -> None:
    res = execute(world, {"validate": 1})
    assert res["status"] == "FAILED" and res["error"] == "DrillFailed"
    assert [p for p, _ in world.seen] == ["preflight", "validate", "evidence"]
    assert "Teardown" in entered(res) and drill_instances(world.session) == []


def test_a_failing_restore_goes_through_catch_to_teardown_and_leaves_nothing(world: World) -> None:
    world.runbook.write_text(world.runbook.read_text().replace("snapshot: prod-snap", "snapshot: no-such-snap"))
    res = execute(world)
    assert res["status"] == "FAILED"
    states = entered(res)
    assert "Restore" in states and "Teardown" in states and "Validate" not in states
    assert [p for p, _ in world.seen] == ["preflight", "evidence"]
    assert drill_instances(world.session) == []


def test_a_refused_preflight_creates_nothing(world: World) -> None:
    res = execute(world, {"preflight": 2})
    assert res["status"] == "FAILED" and res["error"] == "PreflightFailed"
    assert "Restore" not in entered(res)
    assert [p for p, _ in world.seen] == ["preflight"]


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
