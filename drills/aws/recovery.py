"""What a drill restores on AWS, as AWS describes it (a snapshot or a point in time of an instance or cluster),
and when AWS says the restore finished."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from drills.aws.calls import AwsCaller, error_code
from drills.clock import iso

__all__ = ["RecoveryPoint", "event_time", "sibling_arn"]

# RDS event messages that say a restore finished (lower-case substrings).
_DONE_EVENTS = ("restored from", "db instance restored", "db cluster restored", "db instance created")


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


def event_time(
    call: AwsCaller, rds: Any, source_type: str, ident: str, window: tuple[datetime, datetime]
) -> datetime | None:
    """When an RDS event inside ``window`` says the restore finished (a refinement of the poll window), if any."""
    after, until = window
    if after >= until:
        return None
    try:
        events = call(
            rds.describe_events,
            SourceIdentifier=ident,
            SourceType=source_type,
            StartTime=after - timedelta(minutes=1),
        ).get("Events", [])
    except Exception as exc:
        if error_code(exc) is None:
            raise
        return None  # events are a refinement; the poll window stands
    times = [
        e["Date"]
        for e in events
        if isinstance(e.get("Date"), datetime)
        and any(s in str(e.get("Message", "")).lower() for s in _DONE_EVENTS)
        and after < e["Date"] <= until
    ]
    return max(times) if times else None
