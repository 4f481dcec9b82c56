"""Aurora backend: restore a DB cluster (snapshot or point in time), then its writer.

A restored Aurora cluster has no instances (in AWS as in moto), so the drill
creates one writer with ``create_db_instance(DBClusterIdentifier=...)`` once
the cluster is available. Order of resources, and so of teardown (reversed):
security group, subnet group, cluster, writer instance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from drills.aws.aurora_declaration import AuroraPitrSource, AuroraSnapshotSource
from drills.aws.backend import CLUSTER, INSTANCE, AwsBackend
from drills.aws.calls import AwsCaller, aws_errors, drill_identifier, error_code, is_not_found, pages
from drills.aws.rds import wait_instance
from drills.aws.recovery import RecoveryPoint, sibling_arn
from drills.aws.state import AwsPlan, AwsReady, AwsRestored
from drills.aws.waits import status_check
from drills.backends.base import BackendSettings, StepContext
from drills.errors import PreflightError, RestoreFailed
from drills.forecast_poll import aligned
from drills.wait import PollPolicy, PollResult, poll

__all__ = ["CLUSTER_TERMINAL", "AuroraBackend", "create"]

CLUSTER_TERMINAL = frozenset(
    {
        "failed",
        "inaccessible-encryption-credentials",
        "inaccessible-encryption-credentials-recoverable",
        "incompatible-network",
        "incompatible-parameters",
        "incompatible-restore",
        "migration-failed",
        "storage-full",
        "deleting",
        "stopped",
    }
)


def create(source: Any, settings: BackendSettings) -> AuroraBackend:
    if not isinstance(source, AuroraSnapshotSource | AuroraPitrSource):
        raise TypeError(
            f"the aurora backend restores aurora-snapshot / aurora-pitr sources, not {type(source).__name__}"
        )
    return AuroraBackend(source, settings)


class AuroraBackend(AwsBackend):
    name: str = "aurora"
    engine_family: ClassVar[str] = "aurora"
    source: AuroraSnapshotSource | AuroraPitrSource

    def __init__(self, source: AuroraSnapshotSource | AuroraPitrSource, settings: BackendSettings) -> None:
        super().__init__(source, settings)
        self.cluster_id = self.base_id
        self.writer_id = drill_identifier(settings.runbook_name or "runbook", settings.run_id, "w1")

    def _identifiers_to_check(self) -> list[tuple[str, str]]:
        return [("cluster", self.cluster_id), ("instance", self.writer_id)]

    def _quota_names(self) -> list[str]:
        return ["DBInstances", "DBClusters"]

    # ------------------------------------------------------------------ recovery point
    def _recovery_point(self, call: AwsCaller) -> RecoveryPoint:
        rds = self.client("rds")
        src = self.source
        if isinstance(src, AuroraSnapshotSource):
            if src.snapshot is not None:
                try:
                    snaps = call(rds.describe_db_cluster_snapshots, DBClusterSnapshotIdentifier=src.snapshot)[
                        "DBClusterSnapshots"
                    ]
                except Exception as exc:
                    if is_not_found(exc):
                        raise PreflightError(f"DB cluster snapshot {src.snapshot} not found in {self.region}") from exc
                    raise
                snap = snaps[0] if snaps else None
                if snap is None or snap.get("Status") != "available":
                    raise PreflightError(f"DB cluster snapshot {src.snapshot} is not available")
            else:
                filters: dict[str, Any] = {"DBClusterIdentifier": src.latest_snapshot_of}
                if src.snapshot_type != "any":
                    filters["SnapshotType"] = src.snapshot_type
                items = list(
                    pages(lambda m: call(rds.describe_db_cluster_snapshots, **filters, **m), "DBClusterSnapshots")
                )
                usable = [s for s in items if s.get("Status") == "available" and s.get("SnapshotCreateTime")]
                if not usable:
                    raise PreflightError(
                        f"no available {src.snapshot_type} snapshot of DB cluster {src.latest_snapshot_of}"
                    )
                snap = max(usable, key=lambda s: s["SnapshotCreateTime"])
            arn = str(snap.get("DBClusterSnapshotArn", ""))
            return RecoveryPoint(
                kind="snapshot",
                engine=str(snap.get("Engine")),
                engine_version=snap.get("EngineVersion"),
                source_identifier=str(snap.get("DBClusterIdentifier")),
                source_arn=sibling_arn(arn, "cluster-snapshot", "cluster", snap.get("DBClusterIdentifier")),
                snapshot_id=str(snap.get("DBClusterSnapshotIdentifier")),
                snapshot_arn=arn or None,
                snapshot_type=snap.get("SnapshotType"),
                created_at=snap.get("SnapshotCreateTime"),
                encrypted=bool(snap.get("StorageEncrypted")),
                kms_key_id=snap.get("KmsKeyId"),
                master_username=snap.get("MasterUsername"),
            )
        try:
            cl = call(rds.describe_db_clusters, DBClusterIdentifier=src.source_cluster)["DBClusters"][0]
        except Exception as exc:
            if is_not_found(exc):
                raise PreflightError(f"source DB cluster {src.source_cluster} not found in {self.region}") from exc
            raise
        earliest, latest = cl.get("EarliestRestorableTime"), cl.get("LatestRestorableTime")
        if not isinstance(earliest, datetime) or not isinstance(latest, datetime):
            raise PreflightError(f"DB cluster {src.source_cluster} reports no restorable time window")
        target = src.target_time
        if isinstance(target, datetime) and not earliest <= target <= latest:
            raise PreflightError(
                f"target_time {target.isoformat()} is outside the restorable window "
                f"[{earliest.isoformat()}, {latest.isoformat()}] of cluster {src.source_cluster}",
                hint="choose a time inside the window, or `latest`",
            )
        return RecoveryPoint(
            kind="pitr",
            engine=str(cl.get("Engine")),
            engine_version=cl.get("EngineVersion"),
            source_identifier=str(cl["DBClusterIdentifier"]),
            source_arn=cl.get("DBClusterArn"),
            target_time=target,
            earliest=earliest,
            latest=latest,
            earliest_from="cluster EarliestRestorableTime",
            encrypted=bool(cl.get("StorageEncrypted")),
            kms_key_id=cl.get("KmsKeyId"),
            master_username=cl.get("MasterUsername"),
        )

    # ------------------------------------------------------------------ restore
    def restore(self, plan: AwsPlan, ctx: StepContext) -> AwsRestored:
        call = self.caller(ctx)
        rp = plan.recovery_point
        with aws_errors("restore"):
            restored = self._prepare(ctx, call, plan)
            sg_ids, subnet_group = list(restored.security_group_ids), restored.subnet_group
            rds = self.client("rds")
            common: dict[str, Any] = {
                "DBClusterIdentifier": self.cluster_id,
                "DBSubnetGroupName": subnet_group,
                "VpcSecurityGroupIds": sg_ids,
                "DeletionProtection": False,
                "CopyTagsToSnapshot": False,
                "Tags": self.tags(ctx),
                "Port": self.port,
            }
            if self.source.iam_auth:
                common["EnableIAMDatabaseAuthentication"] = True
            if self.source.cluster_parameter_group:
                common["DBClusterParameterGroupName"] = self.source.cluster_parameter_group
            if self.source.kms_key_id:
                common["KmsKeyId"] = self.source.kms_key_id
            ctx.register(self.resource(CLUSTER, self.cluster_id, plan))
            requested, t0 = ctx.clock.now(), ctx.clock.monotonic_ns()
            try:
                if isinstance(self.source, AuroraSnapshotSource):
                    call(
                        rds.restore_db_cluster_from_snapshot,
                        SnapshotIdentifier=self._snapshot_ref(rp),
                        Engine=rp.engine,
                        **({"EngineVersion": self.source.engine_version} if self.source.engine_version else {}),
                        **common,
                    )
                else:
                    when: dict[str, Any] = (
                        {"UseLatestRestorableTime": True}
                        if self.source.target_time == "latest"
                        else {"RestoreToTime": self.source.target_time}
                    )
                    call(
                        rds.restore_db_cluster_to_point_in_time,
                        SourceDBClusterIdentifier=rp.source_identifier,
                        **when,
                        **common,
                    )
            except Exception as exc:
                if "AlreadyExists" not in str(error_code(exc)):
                    raise
                existing = call(rds.describe_db_clusters, DBClusterIdentifier=self.cluster_id)["DBClusters"][0]
                self._adopt("DB cluster", self.cluster_id, existing.get("TagList"))
            took_ms = max(1, (ctx.clock.monotonic_ns() - t0) // 1_000_000)
            self._mark(ctx, "restore-requested", requested, "runner-clock", int(took_ms))
            self._target = {"cluster": self.cluster_id, "subnet_group": subnet_group, "security_groups": sg_ids}
        return restored

    def _wait_cluster(
        self,
        ctx: StepContext,
        call: AwsCaller,
        what: str,
        *,
        modifications: bool = False,
        policy: PollPolicy | None = None,
    ) -> PollResult[dict[str, Any]]:
        rds = self.client("rds")

        def describe() -> dict[str, Any]:
            found: dict[str, Any] = call(rds.describe_db_clusters, DBClusterIdentifier=self.cluster_id)["DBClusters"][0]
            return found

        check = status_check(
            ctx, describe, f"DB cluster {self.cluster_id}", "Status", CLUSTER_TERMINAL, modifications=modifications
        )
        return poll(
            ctx.clock, ctx.deadline_ns, check, f"{what} {self.cluster_id}", policy=policy or PollPolicy(),
            on_poll=self.settings.on_poll,
        )  # fmt: skip

    def _ensure_writer(self, ctx: StepContext, call: AwsCaller, plan: AwsPlan) -> None:
        rds = self.client("rds")
        try:
            found = call(rds.describe_db_instances, DBInstanceIdentifier=self.writer_id)["DBInstances"]
        except Exception as exc:
            if not is_not_found(exc):
                raise
            found = []
        if found:  # a retried await_ready: the writer was created by this run already
            self._adopt("DB instance", self.writer_id, found[0].get("TagList"))
            return
        ctx.register(self.resource(INSTANCE, self.writer_id, plan, cluster=self.cluster_id))
        kwargs: dict[str, Any] = {
            "DBInstanceIdentifier": self.writer_id,
            "DBClusterIdentifier": self.cluster_id,
            "Engine": plan.recovery_point.engine,
            "DBInstanceClass": self.source.instance_class,
            "PubliclyAccessible": False,
            "Tags": self.tags(ctx),
        }
        if self.source.parameter_group:
            kwargs["DBParameterGroupName"] = self.source.parameter_group
        try:
            call(rds.create_db_instance, **kwargs)
        except Exception as exc:
            if "AlreadyExists" not in str(error_code(exc)):
                raise
            existing = call(rds.describe_db_instances, DBInstanceIdentifier=self.writer_id)["DBInstances"][0]
            self._adopt("DB instance", self.writer_id, existing.get("TagList"))

    def await_ready(self, restored: AwsRestored, ctx: StepContext) -> AwsReady:
        call = self.caller(ctx)
        rds = self.client("rds")
        with aws_errors("await_ready"):
            paced = aligned(self.settings.restore_poll, ctx.marks, ctx.clock.now())  # the history's forecast
            cluster = self._wait_cluster(ctx, call, "restore of", policy=paced)
            self._mark_polled(ctx, call, "cluster-available", cluster, source_type="db-cluster", ident=self.cluster_id)
            self._ensure_writer(ctx, call, restored.plan)
            writer = wait_instance(self, ctx, call, self.writer_id, "creation of writer")
            self._mark_polled(ctx, call, "instance-available", writer, source_type="db-instance", ident=self.writer_id)
            self._enforce_instance(ctx, call, writer.value, None)
            cl = cluster.value
            password = self.new_password()
            mods: dict[str, Any] = {}
            if cl.get("DeletionProtection"):
                mods["DeletionProtection"] = False
            if int(cl.get("BackupRetentionPeriod") or 1) > 1:
                mods["BackupRetentionPeriod"] = 1  # Aurora's minimum: backups cannot be off
            if self.source.iam_auth and not cl.get("IAMDatabaseAuthenticationEnabled"):
                mods["EnableIAMDatabaseAuthentication"] = True
            if password is not None:
                mods["MasterUserPassword"] = password.reveal()
            if mods:
                ctx.log.info("aws.enforce", identifier=self.cluster_id, changes=sorted(mods))
                call(rds.modify_db_cluster, DBClusterIdentifier=self.cluster_id, ApplyImmediately=True, **mods)
            applied = self._wait_cluster(ctx, call, "modification of", modifications=True)
            self._mark(ctx, "credentials-applied", applied.estimate, "runner-clock", applied.precision_ms)
            inst = wait_instance(self, ctx, call, self.writer_id, "modification of writer", modifications=True)
            # Verify on fresh reads, never on the request. Aurora places the cluster: its subnet
            # group and security groups are the writer's (an instance reporting its own must agree).
            cl = applied.value
            placed = dict(inst.value)
            placed["DBSubnetGroup"] = placed.get("DBSubnetGroup") or {"DBSubnetGroupName": cl.get("DBSubnetGroup")}
            placed["VpcSecurityGroups"] = cl.get("VpcSecurityGroups", [])
            self._check_unprotected(placed, str(placed.get("DBInstanceIdentifier")))
            if cl.get("DeletionProtection"):
                raise RestoreFailed(f"deletion protection still on for cluster {self.cluster_id}")
            self._record(cl, inst.value)
        return AwsReady(restored, placed, self._address, self.port, self._user, password)

    def _record(self, cl: dict[str, Any], db: dict[str, Any]) -> None:
        self._address = cl.get("Endpoint")
        if cl.get("Port"):
            self.port = int(cl["Port"])
        self._user = self.source.master_username or cl.get("MasterUsername")
        self._target = {
            "cluster": self.cluster_id,
            "cluster_arn": cl.get("DBClusterArn"),
            "writer": self.writer_id,
            "endpoint": {"address": self._address, "port": self.port},
            "reader_endpoint": cl.get("ReaderEndpoint"),
            "instance_class": db.get("DBInstanceClass"),
            "engine": cl.get("Engine"),
            "engine_version": cl.get("EngineVersion"),
            "subnet_group": (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName") or cl.get("DBSubnetGroup"),
            "security_groups": [g.get("VpcSecurityGroupId") for g in cl.get("VpcSecurityGroups", [])],
            "publicly_accessible": bool(db.get("PubliclyAccessible")),
            "deletion_protection": bool(cl.get("DeletionProtection")),
            "backup_retention_days": cl.get("BackupRetentionPeriod"),
            "iam_auth": self.source.iam_auth,
            "region": self.region,
            "expires_at": self._expires_at,
        }
