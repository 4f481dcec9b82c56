"""RDS backend: restore a DB instance from a snapshot or to a point in time.

Flow: preflight (read-only) → restore (drill security group and subnet group,
then the restore call; each registered before it is created) → await_ready
(wait for ``available``, enforce private/unprotected/no backups and set a
fresh password in one ``modify_db_instance``, wait until applied, verify what
AWS reports) → endpoint. Shared logic lives in :mod:`aws_backend`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from drills.aws.backend import INSTANCE, AwsBackend
from drills.aws.calls import AwsCaller, aws_errors, error_code, is_not_found, pages
from drills.aws.rds_declaration import RdsPitrSource, RdsSnapshotSource
from drills.aws.recovery import RecoveryPoint, sibling_arn
from drills.aws.state import AwsPlan, AwsReady, AwsRestored
from drills.aws.waits import modifications_pending, status_check
from drills.backends.base import BackendSettings, StepContext
from drills.errors import PreflightError
from drills.forecast_poll import aligned
from drills.wait import PollPolicy, PollResult, poll

__all__ = ["INSTANCE_TERMINAL", "RdsBackend", "create"]

INSTANCE_TERMINAL = frozenset(
    {
        "failed",
        "incompatible-restore",
        "incompatible-parameters",
        "incompatible-network",
        "incompatible-option-group",
        "incompatible-credentials",
        "storage-full",
        "inaccessible-encryption-credentials",
        "inaccessible-encryption-credentials-recoverable",
        "insufficient-capacity",
        "restore-error",
        "deleting",
        "deleted",
        "stopped",
    }
)


def create(source: Any, settings: BackendSettings) -> RdsBackend:
    if not isinstance(source, RdsSnapshotSource | RdsPitrSource):
        raise TypeError(f"the rds backend restores rds-snapshot / rds-pitr sources, not {type(source).__name__}")
    return RdsBackend(source, settings)


def _latest(items: list[dict[str, Any]], time_key: str) -> dict[str, Any] | None:
    usable = [s for s in items if s.get("Status") == "available" and s.get(time_key)]
    return max(usable, key=lambda s: s[time_key]) if usable else None


def wait_instance(
    backend: AwsBackend,
    ctx: StepContext,
    call: AwsCaller,
    ident: str,
    what: str,
    *,
    modifications: bool = False,
    policy: PollPolicy | None = None,
) -> PollResult[dict[str, Any]]:
    """Poll an instance until available (and, with ``modifications``, nothing relevant pending)."""
    rds = backend.client("rds")

    def describe() -> dict[str, Any]:
        found: dict[str, Any] = call(rds.describe_db_instances, DBInstanceIdentifier=ident)["DBInstances"][0]
        return found

    check = status_check(
        ctx, describe, f"DB instance {ident}", "DBInstanceStatus", INSTANCE_TERMINAL, modifications=modifications
    )
    return poll(
        ctx.clock, ctx.deadline_ns, check, f"{what} {ident}", policy=policy or PollPolicy(),
        on_poll=backend.settings.on_poll,
    )  # fmt: skip


class RdsBackend(AwsBackend):
    name: str = "rds"
    engine_family: ClassVar[str] = "rds"
    source: RdsSnapshotSource | RdsPitrSource

    def __init__(self, source: RdsSnapshotSource | RdsPitrSource, settings: BackendSettings) -> None:
        super().__init__(source, settings)
        self.instance_id = self.base_id

    def _identifiers_to_check(self) -> list[tuple[str, str]]:
        return [("instance", self.instance_id)]

    # ------------------------------------------------------------------ recovery point
    def _recovery_point(self, call: AwsCaller) -> RecoveryPoint:
        if isinstance(self.source, RdsSnapshotSource):
            return self._snapshot_point(call, self.source)
        return self._pitr_point(call, self.source)

    def _snapshot_point(self, call: AwsCaller, src: RdsSnapshotSource) -> RecoveryPoint:
        rds = self.client("rds")
        kinds = {"automated": "automated", "manual": "manual", "any": None}
        if src.snapshot is not None:
            try:
                snaps = call(rds.describe_db_snapshots, DBSnapshotIdentifier=src.snapshot)["DBSnapshots"]
            except Exception as exc:
                if is_not_found(exc):
                    raise PreflightError(f"DB snapshot {src.snapshot} not found in {self.region}") from exc
                raise
            snap = snaps[0] if snaps else None
            if snap is None or snap.get("Status") != "available":
                state = snap.get("Status") if snap else "missing"
                raise PreflightError(f"DB snapshot {src.snapshot} is {state}, not available")
        else:
            filters: dict[str, Any] = {"DBInstanceIdentifier": src.latest_snapshot_of}
            if kinds[src.snapshot_type]:
                filters["SnapshotType"] = kinds[src.snapshot_type]
            items = list(pages(lambda m: call(rds.describe_db_snapshots, **filters, **m), "DBSnapshots"))
            snap = _latest(items, "SnapshotCreateTime")
            if snap is None:
                raise PreflightError(
                    f"no available {src.snapshot_type} snapshot of DB instance {src.latest_snapshot_of}"
                )
        arn = str(snap.get("DBSnapshotArn", ""))
        return RecoveryPoint(
            kind="snapshot",
            engine=str(snap.get("Engine")),
            engine_version=snap.get("EngineVersion"),
            source_identifier=str(snap.get("DBInstanceIdentifier")),
            source_arn=sibling_arn(arn, "snapshot", "db", snap.get("DBInstanceIdentifier")),
            snapshot_id=str(snap.get("DBSnapshotIdentifier")),
            snapshot_arn=arn or None,
            snapshot_type=snap.get("SnapshotType"),
            created_at=snap.get("SnapshotCreateTime"),
            encrypted=bool(snap.get("Encrypted")),
            kms_key_id=snap.get("KmsKeyId"),
            master_username=snap.get("MasterUsername"),
        )

    def _pitr_point(self, call: AwsCaller, src: RdsPitrSource) -> RecoveryPoint:
        rds = self.client("rds")
        try:
            db = call(rds.describe_db_instances, DBInstanceIdentifier=src.source_instance)["DBInstances"][0]
        except Exception as exc:
            if is_not_found(exc):
                raise PreflightError(f"source DB instance {src.source_instance} not found in {self.region}") from exc
            raise
        retention = int(db.get("BackupRetentionPeriod") or 0)
        latest = db.get("LatestRestorableTime")
        if retention == 0 or latest is None:
            raise PreflightError(
                f"DB instance {src.source_instance} has no automated backups (retention {retention}): no PITR possible"
            )
        earliest, earliest_from = None, None
        try:
            backups = call(
                rds.describe_db_instance_automated_backups, DBInstanceIdentifier=db["DBInstanceIdentifier"]
            ).get("DBInstanceAutomatedBackups", [])
            windows = [b.get("RestoreWindow", {}).get("EarliestTime") for b in backups]
            found = [w for w in windows if isinstance(w, datetime)]
            if found:
                earliest, earliest_from = min(found), "automated-backups restore window"
        except Exception as exc:
            if error_code(exc) is None:
                raise
            # Not allowed or not there: fall back to what the instance itself says.
        if earliest is None:
            candidates = [latest - timedelta(days=retention)]
            if isinstance(db.get("InstanceCreateTime"), datetime):
                candidates.append(db["InstanceCreateTime"])
            earliest, earliest_from = max(candidates), "derived: max(instance create time, latest - retention)"
        target = src.target_time
        if isinstance(target, datetime):
            if target > latest:
                raise PreflightError(
                    f"target_time {target.isoformat()} is after the latest restorable time {latest.isoformat()}",
                    hint="transaction logs reach S3 about every 5 minutes; choose an earlier time or `latest`",
                )
            if target < earliest:
                raise PreflightError(
                    f"target_time {target.isoformat()} is before the earliest restorable time {earliest.isoformat()}",
                    hint=f"the backup retention is {retention} days",
                )
        return RecoveryPoint(
            kind="pitr",
            engine=str(db.get("Engine")),
            engine_version=db.get("EngineVersion"),
            source_identifier=str(db["DBInstanceIdentifier"]),
            source_arn=db.get("DBInstanceArn"),
            target_time=target,
            earliest=earliest,
            latest=latest,
            earliest_from=earliest_from,
            encrypted=bool(db.get("StorageEncrypted")),
            kms_key_id=db.get("KmsKeyId"),
            master_username=db.get("MasterUsername"),
        )

    # ------------------------------------------------------------------ restore
    def restore(self, plan: AwsPlan, ctx: StepContext) -> AwsRestored:
        call = self.caller(ctx)
        with aws_errors("restore"):
            restored = self._prepare(ctx, call, plan)
            sg_ids, subnet_group = list(restored.security_group_ids), restored.subnet_group
            rds = self.client("rds")
            common: dict[str, Any] = {
                "DBInstanceClass": self.source.instance_class,
                "DBSubnetGroupName": subnet_group,
                "VpcSecurityGroupIds": sg_ids,
                "PubliclyAccessible": False,
                "DeletionProtection": False,
                "BackupRetentionPeriod": 0,
                "MultiAZ": False,
                "CopyTagsToSnapshot": False,
                "Tags": self.tags(ctx),
                "Port": self.port,
            }
            if self.source.iam_auth:
                common["EnableIAMDatabaseAuthentication"] = True
            for key, value in (
                ("DBParameterGroupName", self.source.parameter_group),
                ("OptionGroupName", self.source.option_group),
                ("StorageType", self.source.storage_type),
            ):
                if value:
                    common[key] = value
            ctx.register(self.resource(INSTANCE, self.instance_id, plan))
            requested = ctx.clock.now()
            t0 = ctx.clock.monotonic_ns()
            try:
                if isinstance(self.source, RdsSnapshotSource):
                    call(
                        rds.restore_db_instance_from_db_snapshot,
                        DBInstanceIdentifier=self.instance_id,
                        DBSnapshotIdentifier=self._snapshot_ref(plan.recovery_point),
                        **common,
                    )
                else:
                    when: dict[str, Any] = (
                        {"UseLatestRestorableTime": True}
                        if self.source.target_time == "latest"
                        else {"RestoreTime": self.source.target_time}
                    )
                    call(
                        rds.restore_db_instance_to_point_in_time,
                        SourceDBInstanceIdentifier=plan.recovery_point.source_identifier,
                        TargetDBInstanceIdentifier=self.instance_id,
                        **when,
                        **common,
                    )
            except Exception as exc:
                if "AlreadyExists" not in str(error_code(exc)):
                    raise
                # A retried request whose first attempt went through: adopt it if it is ours.
                existing = call(rds.describe_db_instances, DBInstanceIdentifier=self.instance_id)["DBInstances"][0]
                self._adopt("DB instance", self.instance_id, existing.get("TagList"))
            took_ms = max(1, (ctx.clock.monotonic_ns() - t0) // 1_000_000)
            self._mark(ctx, "restore-requested", requested, "runner-clock", int(took_ms))
            self._target = {"instance": self.instance_id, "subnet_group": subnet_group, "security_groups": sg_ids}
        return restored

    def await_ready(self, restored: AwsRestored, ctx: StepContext) -> AwsReady:
        call = self.caller(ctx)
        with aws_errors("await_ready"):
            paced = aligned(self.settings.restore_poll, ctx.marks, ctx.clock.now())  # the history's forecast
            result = wait_instance(self, ctx, call, self.instance_id, "restore of", policy=paced)
            self._mark_polled(
                ctx, call, "instance-available", result, source_type="db-instance", ident=self.instance_id
            )
            db = result.value
            password = self.new_password()
            modified = self._enforce_instance(ctx, call, db, password)
            if modified is not None:
                if modifications_pending(modified.get("DBInstanceStatus"), modified.get("PendingModifiedValues")):
                    applied = wait_instance(self, ctx, call, self.instance_id, "modification of", modifications=True)
                    db = applied.value
                    self._mark(ctx, "credentials-applied", applied.estimate, "runner-clock", applied.precision_ms)
                else:
                    db = modified
                    self._mark(ctx, "credentials-applied", ctx.clock.now(), "runner-clock", 1)
                # Re-read: never trust the request, nor the modify response.
                db = call(self.client("rds").describe_db_instances, DBInstanceIdentifier=self.instance_id)[
                    "DBInstances"
                ][0]
            self._check_unprotected(db, str(db.get("DBInstanceIdentifier")))
            self._record(db)
        return AwsReady(restored, db, self._address, self.port, self._user, password)

    def _record(self, db: dict[str, Any]) -> None:
        endpoint = db.get("Endpoint") or {}
        self._address = endpoint.get("Address")
        if endpoint.get("Port"):
            self.port = int(endpoint["Port"])
        self._user = self.source.master_username or db.get("MasterUsername")
        self._target = {
            "instance": db.get("DBInstanceIdentifier"),
            "arn": db.get("DBInstanceArn"),
            "endpoint": {"address": self._address, "port": self.port},
            "instance_class": db.get("DBInstanceClass"),
            "engine": db.get("Engine"),
            "engine_version": db.get("EngineVersion"),
            "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
            "vpc_id": (db.get("DBSubnetGroup") or {}).get("VpcId"),
            "security_groups": [g.get("VpcSecurityGroupId") for g in db.get("VpcSecurityGroups", [])],
            "publicly_accessible": bool(db.get("PubliclyAccessible")),
            "deletion_protection": bool(db.get("DeletionProtection")),
            "backup_retention_days": db.get("BackupRetentionPeriod"),
            "iam_auth": self.source.iam_auth,
            "region": self.region,
            "expires_at": self._expires_at,
        }
