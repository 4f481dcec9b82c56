"""The ``aurora`` backend's declaration: source kinds ``aurora-snapshot`` and ``aurora-pitr``.

Kept apart from :mod:`drills.aws.aurora` for the same reason as :mod:`drills.aws.rds_declaration`:
the runbook loader reads every declaration and must not pay for the backend's imports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from drills.aws.options import AwsOptions
from drills.backends.declare import BackendDeclaration, TargetTime, aware_target_time

__all__ = ["DECLARATION", "AuroraPitrSource", "AuroraSnapshotSource"]


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

    _tz = field_validator("target_time")(aware_target_time)


DECLARATION = BackendDeclaration(
    name="aurora",
    kinds={"aurora-snapshot": AuroraSnapshotSource, "aurora-pitr": AuroraPitrSource},
    factory="drills.aws.aurora:create",
)
