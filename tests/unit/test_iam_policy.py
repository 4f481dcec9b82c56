"""docs/iam-policy.json allows every AWS call the code makes, and nothing it does not need.

The calls are found in the source (an ast walk of drills/ and validators/), not listed by hand: a
new boto3 call without its action in the policy fails here, before it fails in someone's account.
A small evaluator (actions, resources, the condition operators the policy uses) then checks the
requests whose resources and tags matter: the Aurora writer's create, incident mode's re-tagging,
and that no statement reaches a production database.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from drills.aws.calls import TAG_EXPIRES, TAG_RUN_ID, drill_tags, kept_tags

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "docs" / "iam-policy.json"
IAM_AUTH_ADDENDUM = ROOT / "docs" / "iam-policy-iam-auth.json"
SOURCES = [ROOT / "drills", ROOT / "validators"]

SERVICES = ("rds", "ec2", "kms", "sts", "s3")
# boto3 client methods that are not one API operation, or whose IAM action is not named after it
CUSTOM = {
    ("rds", "generate_db_auth_token"): "rds-db:connect",
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "get_object_lock_configuration"): "s3:GetBucketObjectLockConfiguration",
    ("s3", "list_object_versions"): "s3:ListBucketVersions",
}
NO_PERMISSION = {"sts:GetCallerIdentity"}  # answers for any principal; no policy can deny it
# Granted for AWS to use on the drill's behalf (RDS decrypting a restored backup), never called by the code.
ON_BEHALF = {"kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}
# Checked by AWS on a call the code makes: PutObject with Object Lock headers needs PutObjectRetention,
# and with SSE-KMS the caller's kms:GenerateDataKey on the bucket key.
ON_BEHALF |= {"s3:PutObjectRetention", "kms:GenerateDataKey"}
# GetObject with a VersionId (drill history reads exactly the listed version) is authorized as GetObjectVersion.
ON_BEHALF |= {"s3:GetObjectVersion"}
PLACEHOLDERS = {
    "REGION": "us-east-1",
    "ACCOUNT": "123456789012",
    "SOURCE-INSTANCE": "prod-db",
    "SOURCE-CLUSTER": "prod-cluster",
    "DRILL-VPC-ID": "vpc-0drill",
    "BACKUP-KEY-ID": "backup-key",
    "EVIDENCE-KEY-ID": "evidence-key",
    "EVIDENCE-BUCKET": "drill-evidence",
    "EVIDENCE-BUCKET-KEY-ID": "evidence-bucket-key",
    "REVIEWED-ISOLATED-SUBNET-GROUP": "isolated",
    "DRILL-IAM-USER": "drill_iam",
    "PRODUCTION-DBI-RESOURCE-ID": "db-PRODUCTION",
    "PRODUCTION-CLUSTER-RESOURCE-ID": "cluster-PRODUCTION",
}
ARN = "arn:aws:rds:us-east-1:123456789012"


# ---------------------------------------------------------------- the calls in the code


@cache
def operations(service: str) -> dict[str, str]:
    """boto3 method name -> API operation name, from botocore's own service model."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): op for op in model.operation_names}


def all_operation_names() -> set[str]:
    """Operation names distinctive enough to flag on any receiver (``sign``, ``verify`` are everyone's)."""
    return {m for s in SERVICES for m in operations(s) if "_" in m} | {m for _, m in CUSTOM}


@dataclass(frozen=True)
class Call:
    service: str
    method: str
    where: str

    @property
    def action(self) -> str:
        return CUSTOM.get((self.service, self.method)) or f"{self.service}:{operations(self.service)[self.method]}"


def _literal_services(tree: ast.AST) -> set[str]:
    """Services named as literals in ``x.client("svc", ...)`` calls of a module."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client"):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value in SERVICES:
            found.add(first.value)
    return found


def _service_of(node: ast.expr, module_services: set[str]) -> str | None:
    """Which client an expression is: ``rds``/``self.rds``, ``self.client("rds")``, or a module's one ``*client``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client":
        first = node.args[0] if node.args else None
        return first.value if isinstance(first, ast.Constant) and first.value in SERVICES else None
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    if name in SERVICES:
        return name
    if name is not None and "client" in name.lower() and len(module_services) == 1:
        return next(iter(module_services))
    return None


def _constants(node: ast.expr) -> list[str]:
    """String constants an expression may evaluate to (a literal, or either side of a conditional)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constants(node.body) + _constants(node.orelse)
    return []


def scan(paths: list[Path]) -> tuple[list[Call], list[str]]:
    """Every client method used in the code, and every use of an operation-like name on an unknown receiver."""
    calls: list[Call] = []
    unknown: list[str] = []
    names = all_operation_names()
    for path in sorted(p for root in paths for p in root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        module_services = _literal_services(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute):
                service = _service_of(node.value, module_services)
                if service is not None and (node.attr in operations(service) or (service, node.attr) in CUSTOM):
                    calls.append(Call(service, node.attr, where))
                elif node.attr in names and service is None:
                    unknown.append(f"{where}: .{node.attr} on {ast.unparse(node.value)}")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
                service = _service_of(node.args[0], module_services)
                for method in _constants(node.args[1]):
                    if service is not None and method in operations(service):
                        calls.append(Call(service, method, where))
    return calls, unknown


# Names that are boto3 operation names but, where they appear, belong to other objects.
@cache
def code_calls() -> tuple[Call, ...]:
    calls, _ = scan(SOURCES)
    return tuple(calls)


# ---------------------------------------------------------------- a small policy evaluator


def load(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    for placeholder, value in sorted(PLACEHOLDERS.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(placeholder, value)
    statements: list[dict[str, Any]] = json.loads(text)["Statement"]
    return statements


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    if case:
        return fnmatch.fnmatchcase(value, pattern)
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            if operator == "Null":
                if (key not in context) != (str(expected).lower() == "true"):
                    return False
            elif operator == "StringEquals":
                if context.get(key) not in _list(expected):
                    return False
            elif operator == "StringLike":
                if not any(_matches(p, context.get(key, ""), case=True) for p in _list(expected)):
                    return False
            else:  # an operator this evaluator does not know: fail closed, extend the evaluator
                return False
    return True


def decide(statements: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str] = {}) -> str:
    """``allow``, ``deny`` (explicit) or ``implicit-deny`` for one action on one resource."""
    allowed = False
    for st in statements:
        if not any(_matches(p, action, case=False) for p in _list(st["Action"])):
            continue
        if not any(_matches(p, resource, case=True) for p in _list(st["Resource"])):
            continue
        if not _conditions_hold(st.get("Condition", {}), context):
            continue
        if st["Effect"] == "Deny":
            return "deny"
        allowed = True
    return "allow" if allowed else "implicit-deny"


def granted_actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for st in statements if st["Effect"] == "Allow" for a in _list(st["Action"])}


def allows_somewhere(statements: list[dict[str, Any]], action: str) -> bool:
    return any(_matches(p, action, case=False) for p in granted_actions(statements))


def request_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {f"aws:RequestTag/{t['Key']}": t["Value"] for t in tags}


def resource_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {f"aws:ResourceTag/{t['Key']}": t["Value"] for t in tags}


# ---------------------------------------------------------------- the tests


def test_the_scan_finds_the_calls_that_matter() -> None:
    """Not vacuous: the walker sees restores, creates, re-tags, deletes and evidence signing."""
    actions = {c.action for c in code_calls()}
    assert {
        "rds:RestoreDBInstanceFromDBSnapshot",
        "rds:RestoreDBClusterToPointInTime",
        "rds:CreateDBInstance",
        "rds:ModifyDBCluster",
        "rds:DeleteDBInstance",
        "rds:AddTagsToResource",
        "rds:DescribeAccountAttributes",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:DescribeRouteTables",
        "kms:DescribeKey",
        "kms:Sign",
        "kms:GetPublicKey",
        "rds-db:connect",
        "sts:GetCallerIdentity",
    } <= actions, sorted(actions)


def test_every_operation_name_in_the_code_is_attributed_to_a_client() -> None:
    """A client under a name the scan does not know would hide its calls: name clients after their service."""
    _, unknown = scan(SOURCES)
    assert unknown == []


def test_the_policy_allows_every_call_the_code_makes() -> None:
    statements = load(POLICY)
    missing = sorted(
        {
            f"{c.action} ({c.where})"
            for c in code_calls()
            if c.action not in NO_PERMISSION
            and c.action != "rds-db:connect"
            and not allows_somewhere(statements, c.action)
        }
    )
    assert missing == []


def test_the_policy_grants_nothing_the_code_does_not_call() -> None:
    called = {c.action for c in code_calls()}
    unused = sorted(a for a in granted_actions(load(POLICY)) if a not in called and a not in ON_BEHALF)
    assert unused == []


def test_rds_db_connect_is_not_in_the_default_policy_and_iam_auth_has_its_documented_addendum() -> None:
    statements = load(POLICY)
    assert not allows_somewhere(statements, "rds-db:connect")
    for user in ("drill_reader", "app_admin", "postgres"):
        assert (
            decide(statements, "rds-db:connect", f"arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ANY/{user}")
            != "allow"
        )
    addendum = load(IAM_AUTH_ADDENDUM)
    drill_copy = "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-NEWCOPY/drill_iam"
    assert decide(addendum, "rds-db:connect", drill_copy) == "allow"
    assert (
        decide(addendum, "rds-db:connect", "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-PRODUCTION/drill_iam")
        == "deny"
    )
    text = (ROOT / "docs" / "aws.md").read_text()
    assert "iam-policy-iam-auth.json" in text and "cannot be limited to drill" in text


CLOCK_TAGS = drill_tags("20260101T000000Z-abcdef", "orders", datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=6))


@pytest.mark.parametrize(
    "resource",
    [
        f"{ARN}:db:drill-orders-1a2b3c4d-w1",  # the writer
        f"{ARN}:cluster:drill-orders-1a2b3c4d",  # its cluster
        f"{ARN}:pg:default.aurora-postgresql15",  # the default parameter group AWS applies
        f"{ARN}:pg:orders-writer-params",  # the runbook's parameter_group
        f"{ARN}:og:default:aurora-mysql-8-0",  # the default option group (aurora-mysql)
    ],
)
def test_the_aurora_writer_may_be_created_with_its_parameter_and_option_groups(resource: str) -> None:
    assert decide(load(POLICY), "rds:CreateDBInstance", resource, request_tags(CLOCK_TAGS)) == "allow"


def test_the_writer_cannot_be_created_untagged_or_outside_the_drill_names() -> None:
    statements = load(POLICY)
    assert decide(statements, "rds:CreateDBInstance", f"{ARN}:db:drill-orders-1a2b3c4d-w1") != "allow"
    assert decide(statements, "rds:CreateDBInstance", f"{ARN}:db:prod-db", request_tags(CLOCK_TAGS)) != "allow"


def test_incident_mode_may_retag_its_own_resources_only() -> None:
    statements = load(POLICY)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    tags = request_tags(kept_tags("run-1", now, now + timedelta(hours=1)))
    ours = resource_tags(CLOCK_TAGS)
    for resource in (f"{ARN}:db:drill-orders-1", f"{ARN}:cluster:drill-orders-1", f"{ARN}:subgrp:drill-orders-1"):
        assert decide(statements, "rds:AddTagsToResource", resource, {**tags, **ours}) == "allow", resource
    assert decide(statements, "rds:AddTagsToResource", f"{ARN}:db:prod-db", {**tags, **ours}) != "allow"
    sg = "arn:aws:ec2:us-east-1:123456789012:security-group/sg-0123"
    assert decide(statements, "ec2:CreateTags", sg, {**tags, **ours}) == "allow"
    assert decide(statements, "ec2:CreateTags", sg, tags) != "allow"  # a group that is not a drill's


def test_nothing_deletes_or_changes_what_is_not_a_tagged_drill_resource() -> None:
    statements = load(POLICY)
    prod = {"aws:ResourceTag/env": "prod"}
    for action in ("rds:DeleteDBInstance", "rds:ModifyDBInstance", "rds:DeleteDBCluster", "rds:AddTagsToResource"):
        for resource in (f"{ARN}:db:prod-db", f"{ARN}:cluster:prod-cluster", f"{ARN}:db:drill-lookalike"):
            assert decide(statements, action, resource, prod) != "allow", (action, resource)


def test_every_tag_the_policy_requires_is_one_the_code_sets() -> None:
    required = set()
    for st in load(POLICY):
        for tests in st.get("Condition", {}).values():
            required |= {k.split("/", 1)[1] for k in tests if k.startswith(("aws:RequestTag/", "aws:ResourceTag/"))}
    assert required == {TAG_RUN_ID, TAG_EXPIRES}
    assert required <= {t["Key"] for t in CLOCK_TAGS}
