"""The pure half of `drill sfn-worker`: the machine's messages, the answers, the restore read from history.

The worker runs against moto in tests/functional/test_stepfunctions.py; here are the hostile and
edge cases that are cheaper to pin without an execution.
"""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drills.asl import instance_id_for
from drills.errors import InputError
from drills.sfn_worker import Answer, Task, Worker, answer_for_exit, parse_task, restored_timeline, runbook_path

TOKEN = "AAAA-the-task-token-whoever-holds-it-answers"


def message(**over: Any) -> str:
    doc = {
        "phase": "validate",
        "runbook": "/runbooks/orders.yaml",
        "run_id": "run-1",
        "execution_arn": "arn:aws:states:us-east-1:1:execution:m:run-1",
        "instance_id": "drill-orders-x",
        "heartbeat_seconds": 300,
        "task_token": TOKEN,
    }
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_message_of_the_exported_machine_parses_and_the_token_never_shows() -> None:
    task = parse_task(message(error={"Error": "RestoreFailed", "Cause": "instance is failed"}, state_prefix="a."))
    assert (task.phase, task.run_id, task.instance_id, task.heartbeat_seconds) == (
        "validate",
        "run-1",
        "drill-orders-x",
        300,
    )
    assert task.error["Error"] == "RestoreFailed" and task.state_prefix == "a."
    assert TOKEN not in repr(task)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (message(task_token=None), "'task_token' missing"),
        (message(instance_id=""), "'instance_id' missing"),
        (message(phase="restore"), "phase 'restore'"),
        (message(heartbeat_seconds=True), "heartbeat_seconds True"),
        (message(heartbeat_seconds=0), "heartbeat_seconds 0"),
    ],
)
def test_a_bad_message_is_refused_by_field_without_the_token(body: str, says: str) -> None:
    with pytest.raises(InputError, match=says) as err:
        parse_task(body)
    assert TOKEN not in str(err.value)


def test_the_runbook_must_lie_under_a_runbook_root(tmp_path: Path) -> None:
    root = tmp_path / "runbooks"
    (root / "team").mkdir(parents=True)
    inside = root / "team" / "orders.yaml"
    assert runbook_path(str(inside), [root]) == inside
    assert runbook_path(inside.as_uri(), [root]) == inside
    for outside in (str(tmp_path / "elsewhere.yaml"), f"{root}/../elsewhere.yaml", "/etc/passwd"):
        with pytest.raises(InputError, match="outside the worker's runbook roots"):
            runbook_path(outside, [root])
    with pytest.raises(InputError, match="a path or file:// URI"):
        runbook_path("s3://bucket/orders.yaml", [root])


def test_a_failure_answer_holds_no_password_and_fits_the_api() -> None:
    a = Answer.failure(
        "E" * 300,
        "cannot connect postgresql://admin:hunter2@db/x; password=s3cret; token xyz-managed " + "x" * 40000,
        secrets=["xyz-managed"],
    )
    assert not a.ok and len(a.error) == 256 and len(a.cause) == 32768
    for secret in ("hunter2", "s3cret", "xyz-managed"):
        assert secret not in a.cause


def test_only_exit_0_is_success_and_a_failure_names_why_and_where_the_evidence_is() -> None:
    ok = answer_for_exit({"exit_code": 0, "verdict": "passed"}, "validate")
    assert ok.ok and ok.output["verdict"] == "passed"
    failed = answer_for_exit(
        {"exit_code": 1, "reasons": ["row_counts orders: expected 4, found 3"], "evidence": "/e/run-1.json"},
        "validate",
    )
    assert (failed.ok, failed.error) == (False, "DrillFailed")
    assert "expected 4, found 3" in failed.cause and "/e/run-1.json" in failed.cause
    assert answer_for_exit({"exit_code": 130}, "validate").error == "WorkerStopped"
    assert answer_for_exit({"exit_code": 3}, "validate").error == "InfrastructureError"
    assert answer_for_exit({}, "validate").error == "InfrastructureError"  # no exit code is no success


def test_the_evidence_phase_knows_whether_validation_wrote_the_record_from_the_message_alone() -> None:
    from drills.sfn_worker import recorded_by_validate

    assert recorded_by_validate({})  # Evidence without an error: validation answered success
    assert recorded_by_validate({"Error": "DrillFailed", "Cause": "validate: exit 1: ...; evidence /e/run-1.json"})
    assert not recorded_by_validate({"Error": "States.HeartbeatTimeout", "Cause": "a worker died"})
    assert not recorded_by_validate({"Error": "rds.InsufficientDBInstanceCapacity", "Cause": "no capacity"})
    assert not recorded_by_validate({"Error": "InputError", "Cause": "validate: runbook outside the roots"})


def entered(name: str, at: datetime) -> dict[str, Any]:
    return {"type": "TaskStateEntered", "timestamp": at, "stateEnteredEventDetails": {"name": name}}


def test_the_restore_counted_in_the_rto_is_the_execution_s_from_its_history() -> None:
    t0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    history = [
        entered("a.Restore", t0),
        entered("b.Restore", t0 + timedelta(seconds=5)),  # another iteration of a fleet
        entered("a.Isolate", t0 + timedelta(minutes=40)),
        entered("a.Validate", t0 + timedelta(minutes=45)),
    ]
    now = t0 + timedelta(minutes=46)
    at, (restore, ready) = restored_timeline(history, "a.", now, now_ns=10**15)
    assert at == t0
    assert (restore.state, restore.duration_ms) == ("restore", 40 * 60_000)
    assert (ready.state, ready.duration_ms) == ("await_ready", 5 * 60_000)
    assert ready.end_ns == 10**15 - 60 * 10**9  # the worker got the drill a minute after Validate was entered
    with pytest.raises(InputError, match=r"no b\.Isolate, b\.Validate state"):
        restored_timeline(history, "b.", now, now_ns=10**15)


class _NoAws:
    def client(self, service: str, **_: Any) -> Any:
        return object()  # any call fails the test: nothing may be asked of AWS for a forged message


def test_a_message_naming_another_instance_is_refused_before_any_aws_call(tmp_path: Path) -> None:
    rb = tmp_path / "orders.yaml"
    rb.write_text(
        textwrap.dedent(
            """\
            name: orders
            source:
              kind: rds-snapshot
              region: us-east-1
              engine: postgres
              snapshot: prod-snap
              instance_class: db.t4g.micro
              database: orders
              isolation: {db_subnet_group: isolated, security_group_ids: [sg-1], subnet_ids: []}
            objectives: {rto_seconds: 600}
            """
        )
    )
    worker = Worker(_NoAws(), "https://sqs/q", [tmp_path])
    forged = Task("validate", str(rb), "run-1", "arn:x", "prod-db", TOKEN)
    answer = worker.work(forged)
    assert not answer.ok and answer.error == "InputError"
    assert "prod-db" in answer.cause and instance_id_for("orders", "run-1") in answer.cause


def test_the_command_refuses_bad_options_before_touching_aws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drills.cli import main

    assert main(["sfn-worker", "--queue-url", "q", "--runbook-root", str(tmp_path / "nowhere")]) == 2
    assert "--runbook-root" in capsys.readouterr().err
    assert main(["sfn-worker", "--queue-url", "q", "--runbook-root", str(tmp_path), "--wait-seconds", "30"]) == 2
    assert "1 to 20 seconds" in capsys.readouterr().err


def test_once_on_an_empty_queue_waits_once_and_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws

    from drills.cli import main

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        queue = boto3.client("sqs").create_queue(QueueName="restore-drill-tasks")["QueueUrl"]
        args = ["sfn-worker", "--queue", queue, "--runbook-root", str(tmp_path), "--once", "--wait-seconds", "1"]
        assert main(args) == 0


def test_the_worker_adopts_only_an_instance_this_execution_tagged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A look-alike named as the drill's instance, not tagged by this execution: refused, never registered."""
    import boto3
    import structlog
    from moto import mock_aws

    from drills.aws.adopted import AdoptedRdsBackend
    from drills.aws.isolation import NetworkView
    from drills.aws.rds_declaration import RdsSnapshotSource
    from drills.aws.recovery import RecoveryPoint
    from drills.aws.state import AwsPlan
    from drills.backends.base import BackendSettings, StepContext
    from drills.clock import FakeClock
    from drills.errors import IsolationError

    for k, v in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    ident = instance_id_for("orders", "run-1")
    with mock_aws():
        session = boto3.Session(region_name="us-east-1")
        rds: Any = session.client("rds")
        source = RdsSnapshotSource.model_validate(
            {
                "kind": "rds-snapshot",
                "region": "us-east-1",
                "engine": "postgres",
                "snapshot": "prod-snap",
                "instance_class": "db.t4g.micro",
                "database": "orders",
                "isolation": {"db_subnet_group": "isolated", "security_group_ids": ["sg-1"], "subnet_ids": []},
            }
        )
        clock = FakeClock()
        registered: list[Any] = []
        ctx = StepContext(clock, 10**15, structlog.get_logger(), registered.append)
        point = RecoveryPoint("snapshot", "postgres", None, "prod", snapshot_id="prod-snap")
        plan = AwsPlan(point, NetworkView("vpc-1", [], []), ())  # preflight's network facts: none failed
        settings = BackendSettings(
            run_id="run-1", run_dir=Path("/nonexistent"), clock=clock, runbook_name="orders", aws_session=session
        )
        for tags in (
            [
                {"Key": "restore-drills:run-id", "Value": "run-2"},
                {"Key": "restore-drills:created-by", "Value": "step-functions"},
            ],
            [{"Key": "restore-drills:run-id", "Value": "run-1"}],  # not created by the machine
        ):
            rds.create_db_instance(
                DBInstanceIdentifier=ident,
                Engine="postgres",
                DBInstanceClass="db.t4g.micro",
                MasterUsername="admin",
                MasterUserPassword="look-alike-1",
                AllocatedStorage=20,
                Tags=tags,
            )
            with pytest.raises(IsolationError, match="not this execution's"):
                AdoptedRdsBackend(source, settings, ident).restore(plan, ctx)
            assert registered == []  # teardown will never touch it
            rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)
