"""Preflight checks of an AWS drill that need no resource of ours: KMS keys, RDS quotas, free identifiers.

Each returns the facts the evidence records; what makes the restore impossible is a
:class:`~drills.errors.PreflightError` naming what to grant or free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drills.aws.calls import AwsCaller, error_code, is_not_found, quota_count, why
from drills.aws.recovery import RecoveryPoint
from drills.errors import DeadlineExceeded, Interrupted, PreflightError

__all__ = ["check_free", "check_kms", "check_quota"]


def check_kms(
    call: AwsCaller, kms_client: Callable[[str | None], Any], rp: RecoveryPoint, extra_key: str | None
) -> dict[str, Any]:
    """Every KMS key the restore needs (the backup's, the runbook's) exists, is enabled and may be described."""
    keys = [k for k in (rp.kms_key_id if rp.encrypted else None, extra_key) if k]
    checked: list[dict[str, Any]] = []
    for key in keys:
        region = key.split(":")[3] if key.startswith("arn:") else None
        try:
            kms = kms_client(region)
            meta = call(kms.describe_key, KeyId=key)["KeyMetadata"]
        except Exception as exc:
            code = error_code(exc)
            if code in ("AccessDeniedException", "AccessDenied"):
                raise PreflightError(
                    f"missing KMS key access: cannot use {key} that encrypts the backup ({code})",
                    hint="grant kms:DescribeKey, kms:CreateGrant and kms:Decrypt on the key to the drill role",
                ) from exc
            if code in ("NotFoundException",):
                raise PreflightError(f"KMS key {key} of the backup does not exist or is not visible") from exc
            raise
        state = meta.get("KeyState")
        if state != "Enabled":
            raise PreflightError(f"KMS key {key} is {state}; the backup cannot be decrypted")
        checked.append({"key": key, "state": state, "describe_key": "allowed"})
    return {"encrypted": rp.encrypted, "keys": checked}


def check_quota(call: AwsCaller, rds: Any, quota_names: list[str]) -> dict[str, Any]:
    """Room for the instances/clusters a restore adds.

    Advisory: a full quota fails preflight (the restore would fail anyway), but an answer that
    cannot be used (the call refused or unimplemented, the quota missing, a count that is not a
    number) is a warning in the evidence, never a failed drill.
    """
    try:
        answer = call(rds.describe_account_attributes)
    except (Interrupted, DeadlineExceeded):
        raise
    except Exception as exc:  # denied, throttled past retries, unparsable, not implemented
        return {"checked": False, "warning": f"describe_account_attributes failed: {why(exc)}"}
    quotas = answer.get("AccountQuotas") if isinstance(answer, Mapping) else None
    if not isinstance(quotas, list):
        return {"checked": False, "warning": "describe_account_attributes answered without AccountQuotas"}
    out: dict[str, Any] = {"checked": True}
    unusable: list[str] = []
    for name in quota_names:
        q = next((q for q in quotas if isinstance(q, Mapping) and q.get("AccountQuotaName") == name), None)
        used, most = (quota_count(q.get("Used")), quota_count(q.get("Max"))) if q is not None else (None, None)
        if used is None or most is None:
            unusable.append(name)
            continue
        out[name] = {"used": used, "max": most}
        if used + 1 > most:
            raise PreflightError(
                f"RDS quota {name} exhausted ({used}/{most})",
                hint="delete unused databases or raise the quota in Service Quotas",
            )
    if unusable:
        out["checked"] = len(unusable) < len(quota_names)
        out["warning"] = f"quota {', '.join(unusable)} missing from the answer or not a count: not checked"
    return out


def check_free(call: AwsCaller, rds: Any, ec2: Any, checks: list[tuple[str, str]], sg_name: str | None) -> list[str]:
    """The identifiers a restore will create (instance, cluster, subnet group; ``sg_name`` when it creates a
    security group) are free: a leftover of an earlier run is named, never adopted."""
    for kind, ident in checks:
        try:
            if kind == "instance":
                call(rds.describe_db_instances, DBInstanceIdentifier=ident)
            elif kind == "cluster":
                call(rds.describe_db_clusters, DBClusterIdentifier=ident)
            else:
                call(rds.describe_db_subnet_groups, DBSubnetGroupName=ident)
        except Exception as exc:
            if is_not_found(exc):
                continue
            raise
        raise PreflightError(
            f"{kind} identifier {ident} is taken", hint="a leftover of an earlier run? `drill sweep` removes it"
        )
    if sg_name is not None:
        found = call(ec2.describe_security_groups, Filters=[{"Name": "group-name", "Values": [sg_name]}]).get(
            "SecurityGroups", []
        )
        if found:
            raise PreflightError(f"security group name {sg_name} is taken", hint="run `drill sweep`")
    return [ident for _, ident in checks] + ([sg_name] if sg_name is not None else [])
