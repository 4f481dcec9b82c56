"""The drill as an Amazon States Language definition, for AWS Step Functions (``drill export-asl``).

The local machine's states map one to one onto Step Functions:

- the restore, the waits and the deletes are ``arn:aws:states:::aws-sdk:rds:*`` tasks, so no
  runner polls for hours; a wait is ``Wait`` + ``describeDBInstances`` + ``Choice``, with the
  same growing intervals as :class:`~drills.wait.PollPolicy` (precomputed into
  the execution's input, since ASL has no multiplication) and the same whole-drill deadline;
- this project's own code runs three times as a callback task (``sqs:sendMessage.waitForTaskToken``):
  ``preflight`` (read-only checks before anything is created), ``validate`` (isolation facts,
  validators, measurement) and ``evidence`` (after teardown, from the execution history). A
  ``drill sfn-worker`` (:mod:`drills.sfn_worker`) in the drill subnets (an ECS service, or the
  runner machine) takes the message, does the work while sending heartbeats, and answers with
  ``SendTaskSuccess`` (``{"exit_code": 0, ...}``) or ``SendTaskFailure``, which the ``Catch``
  takes to teardown. Not Lambda: a validator on a big database runs longer than Lambda's
  15 minutes, and the image carries the PostgreSQL and MariaDB clients. Not ``ecs:runTask.sync``,
  which would be the natural choice: moto cannot execute its ECS integration (5.2.1 fails with
  KeyErrors on ``Cluster``/``StartedBy``), and a definition we cannot execute in a test is a
  guess; the callback also lets a worker sit wherever the data plane is reachable;
- every state after the restore request has a ``Catch`` into ``Teardown``, and the validation
  verdict goes to ``Teardown`` too: teardown runs on every path;
- the instance identifier is ``drill-<runbook>-<MD5 of the execution name>``, derived inside the machine,
  never taken from the execution input: whoever can start an execution cannot point the
  teardown's delete at another database.

Step Functions' AWS SDK integration names parameters as the AWS SDK for Java v2 does
(``DbInstanceIdentifier``), moto as boto3 does (``DBInstanceIdentifier``): ``dialect`` picks
one, and nothing else differs between the two definitions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Literal

from drills.aws.rds_declaration import RdsPitrSource, RdsSnapshotSource
from drills.errors import InputError
from drills.runbook import LoadedRunbook

__all__ = ["Dialect", "build_definition", "instance_id_for", "poll_schedule", "role_policy"]

Dialect = Literal["aws", "boto"]
TEARDOWN_SECONDS = 3600
HEARTBEAT_SECONDS = 300
RUN_ID = "$$.Execution.Name"  # the run id of a single drill; a fleet's iterations add their runbook
INSTANCE_TERMINAL = (
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "incompatible-option-group",
    "incompatible-credentials",
    "storage-full",
    "inaccessible-encryption-credentials",
    "restore-error",
    "deleting",
    "deleted",
    "stopped",
)


def instance_prefix(runbook: str) -> str:
    """``drill-<at most 24 of the runbook>-``: the instance is this plus the MD5 of the run id (63 at most)."""
    return f"drill-{runbook[:24].rstrip('-')}-"


def instance_id_for(runbook: str, run_id: str) -> str:
    """The instance a run restores, as ``Init`` computes it: the worker refuses a message naming another."""
    return instance_prefix(runbook) + hashlib.md5(run_id.encode()).hexdigest()  # noqa: S324 - a name, not security


def poll_schedule(deadline_s: int, minimum: float = 10.0, maximum: float = 150.0, ratio: float = 0.2) -> list[int]:
    """Wait intervals (whole seconds) until ``deadline_s``: ``ratio`` x time waited, within [minimum, maximum]."""
    out: list[int] = []
    waited = 0
    while waited < deadline_s and len(out) < 1000:
        step = int(min(maximum, max(minimum, ratio * waited)))
        out.append(step)
        waited += step
    return out or [int(minimum)]


def _namer(dialect: Dialect) -> Callable[[str], str]:
    if dialect == "boto":
        return lambda name: name
    return lambda name: re.sub(r"DB(?=[A-Z]|s\b|$)", "Db", name)


def _retry(loaded: LoadedRunbook, state: str, errors: list[str]) -> list[dict[str, Any]]:
    p = loaded.runbook.states.get(state)  # type: ignore[call-overload]
    attempts = p.attempts if p else 3
    if attempts <= 1:
        return []
    return [
        {
            "ErrorEquals": errors,
            "IntervalSeconds": max(1, int(p.backoff_initial_seconds if p else 2)),
            "MaxAttempts": attempts - 1,
            "BackoffRate": 2.0,
        }
    ]


def _task(service: str, action: str, params: dict[str, Any], **rest: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": f"arn:aws:states:::aws-sdk:{service}:{action}", "Parameters": params, **rest}


def _worker(phase: str, cfg: dict[str, Any], next_: str, catch_to: str, timeout_s: int) -> dict[str, Any]:
    """A callback task: the message a ``drill sfn-worker`` takes, and the answer the machine waits for."""
    body: dict[str, Any] = {
        "phase": phase,
        "runbook": cfg["runbook_uri"],
        "run_id.$": "$.drill.run_id",
        "execution_arn.$": "$$.Execution.Id",
        "instance_id.$": "$.drill.instance_id",
        "heartbeat_seconds": cfg["heartbeat_seconds"],
        "task_token.$": "$$.Task.Token",
    }
    if cfg.get("state_prefix"):
        body["state_prefix"] = cfg["state_prefix"]  # a fleet's iteration: its states are "<runbook>.Restore", ...
    if phase == "evidence":
        body["error.$"] = "$.error"  # why the drill failed before validation, if it did ({} if not)
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": cfg["queue_url"], "MessageBody": body},
        "HeartbeatSeconds": cfg["heartbeat_seconds"],  # the worker beats 5 times as often; a dead one fails the state
        "TimeoutSeconds": timeout_s,
        "ResultPath": f"$.{phase}",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to}],
        "Next": next_,
    }


def _wait_loop(
    prefix: str, n: Callable[[str], str], deadline_s: int, on_available: str, throttled: list[str]
) -> dict[str, Any]:
    """Wait, describe, count, decide: the poll of :func:`~drills.wait.poll` in ASL."""
    instances, status = n("DBInstances"), n("DBInstanceStatus")
    terminal = [{"Variable": "$.observed.status", "StringEquals": s} for s in INSTANCE_TERMINAL]
    return {
        f"{prefix}Wait": {"Type": "Wait", "SecondsPath": "$.drill.poll.next", "Next": f"{prefix}Describe"},
        f"{prefix}Describe": _task(
            "rds",
            "describeDBInstances",
            {f"{n('DBInstanceIdentifier')}.$": "$.drill.instance_id"},
            ResultSelector={"status.$": f"States.ArrayGetItem($.{instances}[*].{status}, 0)"},
            ResultPath="$.observed",
            Retry=[{"ErrorEquals": throttled, "IntervalSeconds": 5, "MaxAttempts": 5, "BackoffRate": 2.0}],
            Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Teardown"}],
            Next=f"{prefix}Tick",
        ),
        f"{prefix}Tick": {
            "Type": "Pass",
            "Parameters": {
                "i.$": "States.MathAdd($.drill.poll.i, 1)",
                "waited.$": "States.MathAdd($.drill.poll.waited, $.drill.poll.next)",
                "next.$": "States.ArrayGetItem($.drill.schedule, States.MathAdd($.drill.poll.i, 1))",
            },
            "ResultPath": "$.drill.poll",
            "Next": f"{prefix}Decide",
        },
        f"{prefix}Decide": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.observed.status", "StringEquals": "available", "Next": on_available},
                {"Or": terminal, "Next": f"{prefix}Terminal"},
                {"Variable": "$.drill.poll.waited", "NumericGreaterThanEquals": deadline_s, "Next": f"{prefix}Late"},
            ],
            "Default": f"{prefix}Wait",
        },
        f"{prefix}Terminal": {
            "Type": "Pass",
            "Parameters": {"Error": "RestoreFailed", "Cause.$": "States.Format('instance is {}', $.observed.status)"},
            "ResultPath": "$.error",
            "Next": "Teardown",
        },
        f"{prefix}Late": {
            "Type": "Pass",
            "Parameters": {"Error": "DeadlineExceeded", "Cause": f"not available within {deadline_s}s"},
            "ResultPath": "$.error",
            "Next": "Teardown",
        },
    }


def build_definition(
    loaded: LoadedRunbook,
    *,
    queue_url: str,
    runbook_uri: str,
    dialect: Dialect = "aws",
    schedule: list[int] | None = None,
    run_id: str = RUN_ID,
    state_prefix: str = "",
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
) -> dict[str, Any]:
    """The state machine for an ``rds-snapshot`` or ``rds-pitr`` runbook (see the module docstring)."""
    rb = loaded.runbook
    src = rb.source
    where = f"{loaded.path}: source"
    if not isinstance(src, RdsSnapshotSource | RdsPitrSource):
        raise InputError(f"{where}.kind {src.kind}: export-asl handles rds-snapshot and rds-pitr runbooks")
    iso = src.isolation
    if not iso.db_subnet_group or not iso.security_group_ids:
        raise InputError(
            f"{where}.isolation: export-asl restores into a reviewed db_subnet_group with security_group_ids",
            hint="create them once (docs/aws.md) and name them in the runbook",
        )
    if isinstance(src, RdsSnapshotSource) and not src.snapshot:
        raise InputError(f"{where}.latest_snapshot_of: export-asl needs a fixed snapshot (source.snapshot)")
    n = _namer(dialect)
    deadline = rb.effective_deadline_seconds
    throttled = ["Rds.ThrottlingException"]
    # the not-found error of a deleted instance: Step Functions names it after the Java SDK, moto after botocore
    gone = ["Rds.DbInstanceNotFoundException"] if dialect == "aws" else ["rds.DBInstanceNotFoundFaultException"]
    tags = [
        {"Key": "restore-drills:run-id", "Value.$": "$.drill.run_id"},
        {"Key": "restore-drills:runbook", "Value": rb.name},
        {"Key": "restore-drills:created-by", "Value": "step-functions"},
        # computed by the worker's preflight (ASL has no date arithmetic): `drill sweep` leaves the
        # instance alone until the drill's deadline and teardown's hour have passed, as a local run's
        {"Key": "restore-drills:created-at", "Value.$": "$.preflight.created_at"},
        {"Key": "restore-drills:expires-at", "Value.$": "$.preflight.expires_at"},
    ]
    common = {
        n("DBInstanceClass"): src.instance_class,
        n("DBSubnetGroupName"): iso.db_subnet_group,
        "VpcSecurityGroupIds": list(iso.security_group_ids),
        "PubliclyAccessible": False,
        "DeletionProtection": False,
        "MultiAZ": False,
        "CopyTagsToSnapshot": False,
        "Tags": tags,
    }
    if isinstance(src, RdsSnapshotSource):
        restore = _task(
            "rds",
            "restoreDBInstanceFromDBSnapshot",
            {
                f"{n('DBInstanceIdentifier')}.$": "$.drill.instance_id",
                n("DBSnapshotIdentifier"): src.snapshot,
                **common,
            },
        )
    else:
        when: dict[str, Any] = (
            {"UseLatestRestorableTime": True}
            if src.target_time == "latest"
            else {"RestoreTime": src.target_time.isoformat().replace("+00:00", "Z")}
        )
        restore = _task(
            "rds",
            "restoreDBInstanceToPointInTime",
            {
                n("SourceDBInstanceIdentifier"): src.source_instance,
                f"{n('TargetDBInstanceIdentifier')}.$": "$.drill.instance_id",
                **when,
                **common,
            },
        )
    restore |= {
        "ResultSelector": {"requested": True},
        "ResultPath": "$.restore",
        "Retry": _retry(loaded, "restore", throttled),
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Teardown"}],
        "Next": "RestoreWait",
    }
    work = {
        "queue_url": queue_url,
        "runbook_uri": runbook_uri,
        "state_prefix": state_prefix,
        "heartbeat_seconds": heartbeat_seconds,
    }
    sched = schedule or poll_schedule(deadline)
    states: dict[str, Any] = {
        "Init": {
            "Type": "Pass",
            "Parameters": {
                # RDS identifiers stop at 63 characters and execution names may be 80 (EventBridge
                # Scheduler's are UUIDs): 'drill-' + at most 24 of the runbook + '-' + MD5 of the name
                "run_id.$": run_id,
                "instance_id.$": f"States.Format('{instance_prefix(rb.name)}{{}}', States.Hash({run_id}, 'MD5'))",
                "schedule": sched,
                "poll": {"i": 0, "waited": 0, "next": sched[0]},
            },
            "ResultPath": "$.drill",
            "Next": "NoErrorYet",
        },
        "NoErrorYet": {"Type": "Pass", "Result": {}, "ResultPath": "$.error", "Next": "Preflight"},
        # nothing exists yet: a failed preflight ends the execution without a teardown
        "Preflight": _worker("preflight", work, "PreflightVerdict", "PreflightFailed", 900),
        "PreflightVerdict": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.preflight.exit_code", "NumericEquals": 0, "Next": "Restore"}],
            "Default": "PreflightFailed",
        },
        "PreflightFailed": {"Type": "Fail", "Error": "PreflightFailed", "Cause": "preflight refused the drill"},
        "Restore": restore,
        **_wait_loop("Restore", n, deadline, "Isolate", throttled),
        "Isolate": _task(
            "rds",
            "modifyDBInstance",
            {
                f"{n('DBInstanceIdentifier')}.$": "$.drill.instance_id",
                "PubliclyAccessible": False,
                "DeletionProtection": False,
                "BackupRetentionPeriod": 0,
                "ManageMasterUserPassword": True,  # the password lives in Secrets Manager, never in the history
                "ApplyImmediately": True,
            },
            ResultSelector={"requested": True},
            ResultPath="$.isolate",
            Retry=_retry(loaded, "await_ready", throttled),
            Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Teardown"}],
            Next="ModifyWait",
        ),
        **_wait_loop("Modify", n, deadline, "Validate", throttled),
        "Validate": _worker("validate", work, "ValidationVerdict", "Teardown", deadline),
        "ValidationVerdict": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.validate.exit_code", "NumericEquals": 0, "Next": "Passed"}],
            "Default": "ValidationFailed",
        },
        "Passed": {"Type": "Pass", "Result": "passed", "ResultPath": "$.verdict", "Next": "Teardown"},
        "ValidationFailed": {
            "Type": "Pass",
            "Parameters": {"Error": "ValidationFailed", "Cause": "the validate task exited non-zero"},
            "ResultPath": "$.error",
            "Next": "Teardown",
        },
        "Teardown": _task(
            "rds",
            "deleteDBInstance",
            {
                f"{n('DBInstanceIdentifier')}.$": "$.drill.instance_id",
                "SkipFinalSnapshot": True,
                "DeleteAutomatedBackups": True,
            },
            ResultSelector={"requested": True},
            ResultPath="$.teardown",
            Retry=[{"ErrorEquals": throttled, "IntervalSeconds": 30, "MaxAttempts": 10, "BackoffRate": 1.5}],
            Catch=[
                {"ErrorEquals": gone, "ResultPath": "$.gone", "Next": "Evidence"},  # never created, or already gone
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.teardown_error", "Next": "TeardownFailed"},
            ],
            Next="GoneWait",
        ),
        "GoneWait": {"Type": "Wait", "Seconds": min(30, sched[0]), "Next": "GoneDescribe"},
        "GoneDescribe": _task(
            "rds",
            "describeDBInstances",
            {f"{n('DBInstanceIdentifier')}.$": "$.drill.instance_id"},
            ResultSelector={"status.$": f"States.ArrayGetItem($.{n('DBInstances')}[*].{n('DBInstanceStatus')}, 0)"},
            ResultPath="$.observed",
            Retry=[{"ErrorEquals": throttled, "IntervalSeconds": 5, "MaxAttempts": 5, "BackoffRate": 2.0}],
            Catch=[
                {"ErrorEquals": gone, "ResultPath": "$.gone", "Next": "Evidence"},
                # cannot confirm the instance is gone: fail loudly, `drill sweep` finds it by its tags
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.teardown_error", "Next": "TeardownFailed"},
            ],
            Next="GoneWait",
        ),
        "TeardownFailed": {
            "Type": "Fail",
            "Error": "TeardownError",
            "Cause": "deleting the restored instance failed: run `drill sweep` (it finds it by its tags)",
        },
        "Evidence": _worker("evidence", work, "Verdict", "Verdict", 900),
        "Verdict": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.verdict", "IsPresent": True},
                        {"Variable": "$.verdict", "StringEquals": "passed"},
                    ],
                    "Next": "DrillPassed",
                }
            ],
            "Default": "DrillFailed",
        },
        "DrillPassed": {"Type": "Succeed"},
        "DrillFailed": {"Type": "Fail", "Error": "DrillFailed", "Cause": "see the evidence written by the task"},
    }
    return {
        "Comment": f"restore-drills: {rb.name} ({src.kind}), exported by `drill export-asl`",
        "StartAt": "Init",
        "TimeoutSeconds": deadline + TEARDOWN_SECONDS + 600,
        "States": states,
    }


def role_policy(region: str = "REGION", account: str = "ACCOUNT") -> dict[str, Any]:
    """The IAM policy of the state machine's role: restore/modify/delete only tagged ``drill-*`` instances."""
    instance = f"arn:aws:rds:{region}:{account}:db:drill-*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RestoreOnlyTaggedDrillInstances",
                "Effect": "Allow",
                "Action": [
                    "rds:RestoreDBInstanceFromDBSnapshot",
                    "rds:RestoreDBInstanceToPointInTime",
                    "rds:AddTagsToResource",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestTag/restore-drills:created-by": "step-functions"}},
            },
            {
                "Sid": "ModifyAndDeleteOnlyDrillInstances",
                "Effect": "Allow",
                "Action": ["rds:ModifyDBInstance", "rds:DeleteDBInstance"],
                "Resource": instance,
                "Condition": {"StringEquals": {"aws:ResourceTag/restore-drills:created-by": "step-functions"}},
            },
            {"Sid": "Describe", "Effect": "Allow", "Action": "rds:DescribeDBInstances", "Resource": "*"},
            {
                "Sid": "HandWorkToTheDrillWorker",
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": f"arn:aws:sqs:{region}:{account}:restore-drill-tasks",
            },
        ],
    }
