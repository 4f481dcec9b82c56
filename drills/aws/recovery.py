"""What a drill restores on AWS, as AWS describes it: a snapshot or a point in time of an instance or cluster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from drills.clock import iso

__all__ = ["RecoveryPoint", "sibling_arn"]


@dataclass
class RecoveryPoint:
    """The backup a drill restores, as AWS describes it."""

    kind: Literal["snapshot", "pitr"]
    engine: str
    engine_version: str | None
    source_identifier: str  # instance or cluster the backup belongs to
    source_arn: str | None = None
    snapshot_id: str | None = None
    snapshot_arn: str | None = None
    snapshot_type: str | None = None
    created_at: datetime | None = None
    target_time: datetime | Literal["latest"] | None = None
    earliest: datetime | None = None
    latest: datetime | None = None
    earliest_from: str | None = None
    encrypted: bool = False
    kms_key_id: str | None = None
    master_username: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def t(v: datetime | str | None) -> str | None:
            return iso(v) if isinstance(v, datetime) else v

        return {
            "kind": self.kind,
            "snapshot_id": self.snapshot_id,
            "snapshot_arn": self.snapshot_arn,
            "snapshot_type": self.snapshot_type,
            "created_at": t(self.created_at),
            "target_time": t(self.target_time),
            "earliest_restorable_time": t(self.earliest),
            "latest_restorable_time": t(self.latest),
            "earliest_from": self.earliest_from,
            "encrypted": self.encrypted,
            "kms_key_id": self.kms_key_id,
        }


def sibling_arn(arn: str, kind: str, other: str, ident: Any) -> str | None:
    """The ARN of the instance/cluster a snapshot ARN belongs to (same partition, region, account)."""
    if not arn or not ident or f":{kind}:" not in arn:
        return None
    return arn.split(f":{kind}:", maxsplit=1)[0] + f":{other}:{ident}"
