"""Runbook ``source`` models: what backup a drill restores, one model per kind.

Pure pydantic; the backends that act on them are imported lazily through
:mod:`drills.backends`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drills.barman_source import BarmanSource
from drills.pgbackrest_source import PgbackrestSource

__all__ = [
    "AuroraPitrSource",
    "AuroraSnapshotSource",
    "AwsIsolation",
    "AwsOptions",
    "BarmanSource",
    "MariadbDumpSource",
    "MariadbPitrSource",
    "PgbackrestSource",
    "PostgresDumpSource",
    "PostgresPitrSource",
    "RdsPitrSource",
    "RdsSnapshotSource",
    "Source",
    "TargetTime",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TargetTime = datetime | Literal["latest"]


def _aware(v: TargetTime) -> TargetTime:
    if isinstance(v, datetime) and v.tzinfo is None:
        raise ValueError("target_time needs a timezone, e.g. 2026-11-26T12:00:00Z")
    return v


class PostgresPitrSource(_Frozen):
    kind: Literal["postgres-pitr"]
    base_backup: Path = Field(description="pg_basebackup output: a plain directory or base.tar[.gz].")
    wal_archive: Path = Field(description="Directory of archived WAL segments (archive_command output).")
    target_time: TargetTime = Field(description="Recovery target (timezone-aware) or `latest`.")
    database: str = Field(default="postgres", description="Database the validators connect to.")
    user: str = Field(default="postgres", description="A superuser of the backed-up cluster.")
    verify: Literal["headers", "full"] = Field(
        default="headers",
        description="WAL checks before restoring: page headers of every needed segment (fast), or `full`: "
        "also every record's CRC with pg_waldump over the needed range.",
    )

    _tz = field_validator("target_time")(_aware)


class PostgresDumpSource(_Frozen):
    kind: Literal["postgres-dump"]
    archive: Path = Field(description="pg_dump custom (-Fc) file or directory (-Fd) archive.")
    database: str = Field(default="restored", description="Database created for the restore.")
    jobs: int = Field(default=2, ge=1, le=64, strict=True, description="pg_restore --jobs.")
    user: str = Field(default="postgres", description="Superuser created in the throwaway cluster.")
    taken_at: datetime | None = Field(default=None, description="When the dump was taken (for the achieved RPO).")


class MariadbPitrSource(_Frozen):
    kind: Literal["mariadb-pitr"]
    backup: Path = Field(description="mariadb-backup --backup target directory (prepared on restore).")
    binlogs: Path = Field(description="Directory holding the source's binary logs and their index.")
    target_time: TargetTime
    database: str = Field(default="mysql", description="Database the validators connect to.")

    _tz = field_validator("target_time")(_aware)


class MariadbDumpSource(_Frozen):
    kind: Literal["mariadb-dump"]
    dump: Path = Field(description="mariadb-dump / mysqldump SQL file, optionally .gz.")
    database: str = Field(default="restored", description="Database to restore into when the dump names none.")
    taken_at: datetime | None = None


class AwsIsolation(_Frozen):
    """Where the restored database lives. Either subnets (the drill creates the
    subnet group and security group) or existing ones named here."""

    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    db_subnet_group: str | None = Field(default=None, description="Use this existing DB subnet group.")
    security_group_ids: tuple[str, ...] = Field(default=(), description="Use these existing security groups.")
    runner_security_group_id: str | None = Field(default=None, description="Ingress source for the drill SG.")
    runner_cidr: str | None = Field(default=None, description="Ingress CIDR for the drill SG (not 0.0.0.0/0).")
    allowed_routes: tuple[str, ...] = Field(
        default=(), description="Routes that may leave the VPC, as `rtb-id:destination` exceptions."
    )

    @model_validator(mode="after")
    def _where(self) -> AwsIsolation:
        if not self.db_subnet_group and not self.subnet_ids:
            raise ValueError("give subnet_ids (the drill creates a subnet group) or db_subnet_group")
        if self.db_subnet_group and self.subnet_ids:
            raise ValueError("give either subnet_ids or db_subnet_group, not both")
        if self.runner_cidr in ("0.0.0.0/0", "::/0"):
            raise ValueError("runner_cidr must not be open to the world")
        if self.runner_cidr and self.runner_security_group_id:
            raise ValueError("give one ingress source: runner_security_group_id or runner_cidr")
        if not self.security_group_ids and not (self.runner_cidr or self.runner_security_group_id):
            # The drill creates its security group; without an ingress source nothing could connect.
            raise ValueError("give runner_security_group_id or runner_cidr (or existing security_group_ids)")
        for route in self.allowed_routes:
            rtb, sep, dest = route.partition(":")
            if not (rtb.startswith("rtb-") and sep and dest):
                raise ValueError(f"allowed_routes entries look like rtb-0abc:10.1.0.0/16, got {route!r}")
        return self


class AwsOptions(_Frozen):
    region: str | None = None
    engine: Literal["postgres", "mysql", "mariadb", "aurora-postgresql", "aurora-mysql"]
    instance_class: str = "db.t4g.micro"
    engine_version: str | None = None
    parameter_group: str | None = None
    cluster_parameter_group: str | None = None
    option_group: str | None = None
    storage_type: str | None = None
    kms_key_id: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536, strict=True)
    iam_auth: bool = Field(default=False, description="Connect with IAM auth tokens instead of a fresh password.")
    database: str = Field(default="postgres", description="Database the validators connect to.")
    master_username: str | None = Field(default=None, description="Default: read from the restored resource.")
    isolation: AwsIsolation


class RdsSnapshotSource(AwsOptions):
    kind: Literal["rds-snapshot"]
    snapshot: str | None = Field(default=None, description="Snapshot identifier or ARN.")
    latest_snapshot_of: str | None = Field(default=None, description="Use the newest snapshot of this instance.")
    snapshot_type: Literal["automated", "manual", "any"] = "any"

    @model_validator(mode="after")
    def _one_snapshot(self) -> RdsSnapshotSource:
        if (self.snapshot is None) == (self.latest_snapshot_of is None):
            raise ValueError("give exactly one of snapshot, latest_snapshot_of")
        return self


class RdsPitrSource(AwsOptions):
    kind: Literal["rds-pitr"]
    source_instance: str = Field(description="DB instance identifier (or ARN) to restore from.")
    target_time: TargetTime

    _tz = field_validator("target_time")(_aware)


class AuroraSnapshotSource(AwsOptions):
    kind: Literal["aurora-snapshot"]
    instance_class: str = Field(default="db.t4g.medium", description="Writer class (Aurora has no micro classes).")
    snapshot: str | None = None
    latest_snapshot_of: str | None = Field(default=None, description="Use the newest snapshot of this cluster.")
    snapshot_type: Literal["automated", "manual", "any"] = "any"

    @model_validator(mode="after")
    def _one_snapshot(self) -> AuroraSnapshotSource:
        if (self.snapshot is None) == (self.latest_snapshot_of is None):
            raise ValueError("give exactly one of snapshot, latest_snapshot_of")
        return self


class AuroraPitrSource(AwsOptions):
    kind: Literal["aurora-pitr"]
    instance_class: str = Field(default="db.t4g.medium", description="Writer class (Aurora has no micro classes).")
    source_cluster: str = Field(description="DB cluster identifier to restore from.")
    target_time: TargetTime

    _tz = field_validator("target_time")(_aware)


Source = Annotated[
    PostgresPitrSource
    | PostgresDumpSource
    | MariadbPitrSource
    | MariadbDumpSource
    | RdsSnapshotSource
    | RdsPitrSource
    | AuroraSnapshotSource
    | AuroraPitrSource
    | PgbackrestSource
    | BarmanSource,
    Field(discriminator="kind"),
]
