"""Remove AWS resources left behind by drills that crashed or were kept too long.

Teardown runs at the end of every drill, but a runner can die (OOM, a lost
spot instance, Ctrl-C twice). ``drill sweep`` is the safety net: it lists RDS
instances and clusters, DB subnet groups and security groups that carry the
``drill-`` prefix *and* a ``restore-drills:run-id`` tag, and deletes those that
are

* expired (``restore-drills:expires-at`` in the past; incident mode pushes it out),
* old enough (created more than ``older_than`` ago), and
* not part of a live run (``is_live(run_id)``, answered by the journal).

Anything without the prefix and tag is never touched (the same
:class:`~drills.backends.aws_common.Deleter` as teardown checks it again right
before deleting). Deletion order is instances, clusters, subnet groups,
security groups, because each depends on the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from drills.backends.aws_common import (
    PREFIX,
    TAG_CREATED,
    TAG_EXPIRES,
    TAG_RUN_ID,
    AwsCaller,
    Deleter,
    client_config,
    error_code,
    pages,
    parse_time,
    tag_value,
)
from drills.clock import Clock, iso
from drills.errors import DrillError

__all__ = ["Candidate", "summary", "sweep"]


@dataclass(frozen=True)
class Candidate:
    kind: str  # rds-instance | rds-cluster | rds-subnet-group | ec2-security-group
    id: str
    run_id: str
    expires_at: datetime | None
    created_at: datetime | None
    vpc_id: str | None = None


def _candidate(kind: str, ident: str, tags: Any, created: Any = None, vpc_id: str | None = None) -> Candidate | None:
    run_id = tag_value(tags, TAG_RUN_ID)
    if not ident.startswith(PREFIX) or not run_id:
        return None
    created_at = parse_time(tag_value(tags, TAG_CREATED)) or (created if isinstance(created, datetime) else None)
    return Candidate(kind, ident, run_id, parse_time(tag_value(tags, TAG_EXPIRES)), created_at, vpc_id)


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
    if c.expires_at is not None and c.expires_at > now:
        return f"kept: expires {iso(c.expires_at)}"
    if c.created_at is not None and now - c.created_at < older_than:
        return f"kept: younger than {older_than}"
    if is_live(c.run_id):
        return "kept: its run is still live"
    return None


def sweep(
    session: Any,
    older_than: timedelta,
    dry_run: bool,
    is_live: Callable[[str], bool],
    clock: Clock,
    *,
    region: str | None = None,
    timeout_seconds: float = 3600.0,
) -> list[dict[str, Any]]:
    """Delete expired drill resources of runs that are not live; return one record per resource seen.

    Each record: ``kind, id, run_id, expires_at, action`` (``deleted``,
    ``would-delete``, ``kept``, ``error``) and ``detail``. Errors on one
    resource do not stop the sweep; the CLI should exit non-zero if any record
    has ``action == "error"``.
    """
    rds = session.client("rds", region_name=region, config=client_config())
    ec2 = session.client("ec2", region_name=region, config=client_config())
    call = AwsCaller(clock, clock.monotonic_ns() + int(timeout_seconds * 1e9))
    now = clock.now()
    records: list[dict[str, Any]] = []
    for c in sorted(_list(rds, ec2, call), key=lambda c: (_ORDER[c.kind], c.id)):
        record: dict[str, Any] = {
            "kind": c.kind,
            "id": c.id,
            "run_id": c.run_id,
            "expires_at": iso(c.expires_at) if c.expires_at else None,
        }
        reason = _decide(c, now, older_than, is_live)
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
            continue
        except Exception as exc:
            if error_code(exc) is None:
                raise
            records.append({**record, "action": "error", "detail": f"{error_code(exc)}: {exc}"})
            continue
        records.append({**record, "action": "deleted", "detail": detail})
    return records


def _delete(deleter: Deleter, c: Candidate) -> str:
    if c.kind == "rds-instance":
        return deleter.instance(c.id)
    if c.kind == "rds-cluster":
        return deleter.cluster(c.id)
    if c.kind == "rds-subnet-group":
        return deleter.subnet_group(c.id)
    return deleter.security_group(c.id, c.vpc_id)


def summary(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per action, for the CLI's last line."""
    out: dict[str, int] = {}
    for r in records:
        out[str(r["action"])] = out.get(str(r["action"]), 0) + 1
    return out
