"""The ``rds`` backend's declaration: source kinds ``rds-snapshot`` and ``rds-pitr``.

Kept apart from :mod:`drills.aws.rds` because the runbook loader reads every declaration and
must stay light: the backend pulls in the AWS call wrapper and isolation checks (~60 ms, and
boto3 on first call). This module needs pydantic only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from drills.aws.options import AwsOptions
from drills.backends.declare import BackendDeclaration, TargetTime, aware_target_time

__all__ = ["DECLARATION", "RdsPitrSource", "RdsSnapshotSource"]


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

    _tz = field_validator("target_time")(aware_target_time)


# No check_backup: the snapshot or the automated backups live in the account, checked by preflight.
DECLARATION = BackendDeclaration(
    name="rds",
    kinds={"rds-snapshot": RdsSnapshotSource, "rds-pitr": RdsPitrSource},
    factory="drills.aws.rds:create",
)
