"""The tag-driven AWS part of ``drill sweep``: which drill resources in the account may go, and removing them.

The rule (prefix *and* run-id tag, kept-until or expired-and-old-enough, never a live run's, never one
of a run that still keeps another) is described with the whole sweep in :mod:`drills.sweep`, which
also journals each removal into the run's journal on this machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from drills.aws.calls import (
    PREFIX,
    TAG_CREATED,
    TAG_EXPIRES,
    TAG_KEPT,
    TAG_RUN_ID,
    AwsCaller,
    client_config,
    error_code,
    pages,
    parse_time,
    tag_value,
)
from drills.aws.deleter import Deleter
from drills.clock import Clock, iso
from drills.errors import DrillError

__all__ = ["Candidate", "sweep"]

log = structlog.get_logger("drills.sweep")


@dataclass(frozen=True)
class Candidate:
    kind: str  # rds-instance | rds-cluster | rds-subnet-group | ec2-security-group
    id: str
    run_id: str
    expires_at: datetime | None
    created_at: datetime | None
    vpc_id: str | None = None
    kept: bool = False  # kept for inspection by `drill run --keep`: its expires-at alone decides


def _candidate(kind: str, ident: str, tags: Any, created: Any = None, vpc_id: str | None = None) -> Candidate | None:
    run_id = tag_value(tags, TAG_RUN_ID)
    if not ident.startswith(PREFIX) or not run_id:
        return None
    created_at = parse_time(tag_value(tags, TAG_CREATED)) or (created if isinstance(created, datetime) else None)
    kept = tag_value(tags, TAG_KEPT) is not None
    return Candidate(kind, ident, run_id, parse_time(tag_value(tags, TAG_EXPIRES)), created_at, vpc_id, kept)


def _list(rds: Any, ec2: Any, call: AwsCaller) -> list[Candidate]:
    found: list[Candidate] = []
    for db in pages(lambda m: call(rds.describe_db_instances, **m), "DBInstances"):
        c = _candidate("rds-instance", db["DBInstanceIdentifier"], db.get("TagList"), db.get("InstanceCreateTime"))
        found += [c] if c else []
    for cl in pages(lambda m: call(rds.describe_db_clusters, **m), "DBClusters"):
        c = _candidate("rds-cluster", cl["DBClusterIdentifier"], cl.get("TagList"), cl.get("ClusterCreateTime"))
        found += [c] if c else []
    for group in pages(lambda m: call(rds.describe_db_subnet_groups, **m), "DBSubnetGroups"):
        name = group["DBSubnetGroupName"]
        if name.startswith(PREFIX):  # only then is listing its tags worth a call
            tags = call(rds.list_tags_for_resource, ResourceName=group["DBSubnetGroupArn"]).get("TagList")
            c = _candidate("rds-subnet-group", name, tags)
            found += [c] if c else []
    sgs = call(ec2.describe_security_groups, Filters=[{"Name": "tag-key", "Values": [TAG_RUN_ID]}])
    for sg in sgs.get("SecurityGroups", []):
        c = _candidate("ec2-security-group", sg["GroupName"], sg.get("Tags"), vpc_id=sg.get("VpcId"))
        found += [c] if c else []
    return found


_ORDER = {"rds-instance": 0, "rds-cluster": 1, "rds-subnet-group": 2, "ec2-security-group": 3}


def _decide(c: Candidate, now: datetime, older_than: timedelta, is_live: Callable[[str], bool]) -> str | None:
    """Why a candidate is kept, or None when it may go."""
    if c.kept and c.expires_at is not None:  # the user said how long: that, not --older-than
        if c.expires_at > now:
            return f"kept for inspection until {iso(c.expires_at)}"
    else:
        if c.expires_at is not None and c.expires_at > now:
            return f"kept: expires {iso(c.expires_at)}"
        if c.created_at is not None and now - c.created_at < older_than:
            return f"kept: younger than {older_than}"
    if is_live(c.run_id):
        return "kept: its run is still live"
    return None


def _decide_all(
    found: Sequence[Candidate], now: datetime, older_than: timedelta, is_live: Callable[[str], bool]
) -> list[tuple[Candidate, str | None]]:
    """Per-candidate decisions; a run's resources go together (an instance kept keeps its security group)."""
    decided = [(c, _decide(c, now, older_than, is_live)) for c in found]
    holding: dict[str, Candidate] = {}
    for c, reason in decided:
        if reason is not None:
            holding.setdefault(c.run_id, c)
    out: list[tuple[Candidate, str | None]] = []
    for c, own in decided:
        held = holding.get(c.run_id)
        out.append((c, own if own is not None or held is None else f"kept: {held.kind} {held.id} of its run is kept"))
    return out


def sweep(
    session: Any,
    older_than: timedelta,
    dry_run: bool,
    is_live: Callable[[str], bool],
    clock: Clock,
    *,
    region: str | None = None,
    timeout_seconds: float = 3600.0,
    on_deleted: Callable[[Mapping[str, Any]], object] | None = None,
) -> list[dict[str, Any]]:
    """Delete expired drill resources of runs that are not live; return one record per resource seen.

    Each record: ``scope`` (``aws``), ``kind, id, run_id, expires_at, kept, action`` (``deleted``,
    ``would-delete``, ``kept``, ``error``) and ``detail``. Errors on one resource do not stop the
    sweep; the CLI exits non-zero if any record has ``action == "error"``. ``on_deleted`` gets each
    deleted record (the CLI journals it into the run's journal).
    """
    rds = session.client("rds", region_name=region, config=client_config())
    ec2 = session.client("ec2", region_name=region, config=client_config())
    call = AwsCaller(clock, clock.monotonic_ns() + int(timeout_seconds * 1e9))
    now = clock.now()
    records: list[dict[str, Any]] = []
    found = sorted(_list(rds, ec2, call), key=lambda c: (_ORDER[c.kind], c.id))
    failed: dict[str, str] = {}  # run id -> the resource of it that could not be deleted
    for c, decided in _decide_all(found, now, older_than, is_live):
        reason = decided
        if reason is None and c.run_id in failed:  # its security group would wait on that instance for an hour
            reason = f"kept: {failed[c.run_id]} of the same run could not be deleted"
        record: dict[str, Any] = {
            "scope": "aws",
            "kind": c.kind,
            "id": c.id,
            "run_id": c.run_id,
            "expires_at": iso(c.expires_at) if c.expires_at else None,
            "kept": c.kept,
        }
        if reason is not None:
            records.append({**record, "action": "kept", "detail": reason})
            continue
        if dry_run:
            records.append({**record, "action": "would-delete", "detail": "expired, run not live"})
            continue
        deleter = Deleter(rds=rds, ec2=ec2, call=call, run_id=c.run_id)
        try:
            detail = _delete(deleter, c)
        except DrillError as exc:
            records.append({**record, "action": "error", "detail": str(exc)})
            failed[c.run_id] = f"{c.kind} {c.id}"
            continue
        except Exception as exc:
            if error_code(exc) is None:
                raise
            records.append({**record, "action": "error", "detail": f"{error_code(exc)}: {exc}"})
            failed[c.run_id] = f"{c.kind} {c.id}"
            continue
        records.append({**record, "action": "deleted", "detail": detail})
        if on_deleted is not None:
            on_deleted(records[-1])
    return records


def _delete(deleter: Deleter, c: Candidate) -> str:
    if c.kind == "rds-instance":
        return deleter.instance(c.id)
    if c.kind == "rds-cluster":
        return deleter.cluster(c.id)
    if c.kind == "rds-subnet-group":
        return deleter.subnet_group(c.id)
    return deleter.security_group(c.id, c.vpc_id)
