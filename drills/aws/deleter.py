"""Deleting drill resources on AWS, refusing anything not provably this run's (prefix, run-id tag, not the source).

Shared by backend teardown and ``drill sweep``; every deletion is idempotent and, with ``wait``,
polls (:func:`drills.wait.poll`) until the resource is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drills.aws.calls import DEPENDENCY_CODES, PREFIX, TAG_RUN_ID, AwsCaller, error_code, is_not_found, tag_value
from drills.errors import DeadlineExceeded, TeardownError
from drills.wait import PollPolicy, Verdict, poll

__all__ = ["Deleter"]


@dataclass
class Deleter:
    """Deletes drill resources by identifier, refusing anything not provably ours.

    Used by backend teardown (``run_id`` = this run) and by the sweeper
    (``run_id`` = the expired run's tag). Every method is idempotent: an absent
    resource counts as deleted. ``wait`` makes it poll until the resource is
    gone (or, for dependency errors, until it can be deleted) on the clock.
    """

    rds: Any
    ec2: Any
    call: AwsCaller
    run_id: str
    protected: frozenset[str] = frozenset()
    wait: bool = True
    policy: PollPolicy = field(default_factory=PollPolicy)

    def _check_owned(
        self, kind: str, ident: str, tags: Iterable[Mapping[str, Any]] | None, verb: str = "delete"
    ) -> None:
        if not ident.startswith(PREFIX):
            raise TeardownError(f"refusing to {verb} {kind} {ident}: its name lacks the {PREFIX!r} prefix")
        if ident in self.protected:
            raise TeardownError(f"refusing to {verb} {kind} {ident}: it is the drill's source")
        owner = tag_value(tags, TAG_RUN_ID)
        if owner != self.run_id:
            raise TeardownError(
                f"refusing to {verb} {kind} {ident}: its {TAG_RUN_ID} tag is {owner!r}, not {self.run_id!r}",
                hint="only resources created by this run are touched; remove look-alikes by hand",
            )

    def _poll(self, check: Callable[[], tuple[Verdict, None]], what: str) -> None:
        poll(self.call.clock, self.call.deadline_ns, check, what, policy=self.policy)

    # -- RDS DB instance
    def describe_instance(self, ident: str) -> dict[str, Any] | None:
        try:
            found = self.call(self.rds.describe_db_instances, DBInstanceIdentifier=ident)["DBInstances"]
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return dict(found[0]) if found else None

    def instance(self, ident: str) -> str:
        db = self.describe_instance(ident)
        if db is None:
            return "already absent"
        tags = db.get("TagList")
        if tags is None:
            tags = self.call(self.rds.list_tags_for_resource, ResourceName=db["DBInstanceArn"]).get("TagList", [])
        self._check_owned("DB instance", ident, tags)
        if db.get("DeletionProtection"):
            self.call(
                self.rds.modify_db_instance, DBInstanceIdentifier=ident, DeletionProtection=False, ApplyImmediately=True
            )
        if db.get("DBInstanceStatus") != "deleting":
            in_cluster = bool(db.get("DBClusterIdentifier"))
            kwargs: dict[str, Any] = {} if in_cluster else {"SkipFinalSnapshot": True, "DeleteAutomatedBackups": True}
            self._retry_dependency(lambda: self.rds.delete_db_instance(DBInstanceIdentifier=ident, **kwargs), ident)
        if self.wait:
            self._poll(lambda: ("ready" if self.describe_instance(ident) is None else "pending", None), ident)
            return "deleted"
        return "deleting"

    # -- Aurora DB cluster
    def describe_cluster(self, ident: str) -> dict[str, Any] | None:
        try:
            found = self.call(self.rds.describe_db_clusters, DBClusterIdentifier=ident)["DBClusters"]
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return dict(found[0]) if found else None

    def cluster(self, ident: str) -> str:
        cl = self.describe_cluster(ident)
        if cl is None:
            return "already absent"
        tags = cl.get("TagList")
        if tags is None:
            tags = self.call(self.rds.list_tags_for_resource, ResourceName=cl["DBClusterArn"]).get("TagList", [])
        self._check_owned("DB cluster", ident, tags)
        if cl.get("DeletionProtection"):
            self.call(
                self.rds.modify_db_cluster, DBClusterIdentifier=ident, DeletionProtection=False, ApplyImmediately=True
            )
        if cl.get("Status") != "deleting":
            self._retry_dependency(
                lambda: self.rds.delete_db_cluster(
                    DBClusterIdentifier=ident, SkipFinalSnapshot=True, DeleteAutomatedBackups=True
                ),
                ident,
            )
        if self.wait:
            self._poll(lambda: ("ready" if self.describe_cluster(ident) is None else "pending", None), ident)
            return "deleted"
        return "deleting"

    # -- DB subnet group
    def subnet_group(self, name: str) -> str:
        try:
            found = self.call(self.rds.describe_db_subnet_groups, DBSubnetGroupName=name)["DBSubnetGroups"]
        except Exception as exc:
            if is_not_found(exc):
                return "already absent"
            raise
        if not found:
            return "already absent"
        tags = self.call(self.rds.list_tags_for_resource, ResourceName=found[0]["DBSubnetGroupArn"]).get("TagList", [])
        self._check_owned("DB subnet group", name, tags)
        done = self._retry_dependency(lambda: self.rds.delete_db_subnet_group(DBSubnetGroupName=name), name)
        return "deleted" if done else "already absent"

    # -- EC2 security group
    def security_group(self, name: str, vpc_id: str | None) -> str:
        filters = [{"Name": "group-name", "Values": [name]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        found = self.call(self.ec2.describe_security_groups, Filters=filters)["SecurityGroups"]
        if not found:
            return "already absent"
        if len(found) > 1:
            raise TeardownError(f"security group name {name} matches {len(found)} groups; give the VPC id")
        sg = found[0]
        self._check_owned("security group", name, sg.get("Tags"))
        done = self._retry_dependency(lambda: self.ec2.delete_security_group(GroupId=sg["GroupId"]), name)
        return "deleted" if done else "already absent"

    # -- incident mode
    def retag(self, kind: str, ident: str, tags: list[dict[str, str]], vpc_id: str | None = None) -> str:
        """Set ``tags`` on one of this run's resources (``drill run --keep`` moves its expiry).

        The same ownership rule as deleting: a resource without the prefix and this run's tag is refused.
        """
        if kind == "rds-instance":
            db = self.describe_instance(ident)
            if db is None:
                return "absent"
            arn, current = db["DBInstanceArn"], db.get("TagList")
        elif kind == "rds-cluster":
            cl = self.describe_cluster(ident)
            if cl is None:
                return "absent"
            arn, current = cl["DBClusterArn"], cl.get("TagList")
        elif kind == "rds-subnet-group":
            try:
                groups = self.call(self.rds.describe_db_subnet_groups, DBSubnetGroupName=ident)["DBSubnetGroups"]
            except Exception as exc:
                if is_not_found(exc):
                    return "absent"
                raise
            if not groups:
                return "absent"
            arn, current = groups[0]["DBSubnetGroupArn"], None
        elif kind == "ec2-security-group":
            return self._retag_security_group(ident, tags, vpc_id)
        else:
            raise TeardownError(f"cannot tag {kind} {ident}: not a kind of resource drills create")
        if current is None:
            current = self.call(self.rds.list_tags_for_resource, ResourceName=arn).get("TagList", [])
        self._check_owned(kind, ident, current, verb="tag")
        self.call(self.rds.add_tags_to_resource, ResourceName=arn, Tags=tags)
        return "tagged"

    def _retag_security_group(self, name: str, tags: list[dict[str, str]], vpc_id: str | None) -> str:
        filters = [{"Name": "group-name", "Values": [name]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        found = self.call(self.ec2.describe_security_groups, Filters=filters)["SecurityGroups"]
        if not found:
            return "absent"
        if len(found) > 1:
            raise TeardownError(f"security group name {name} matches {len(found)} groups; give the VPC id")
        self._check_owned("security group", name, found[0].get("Tags"), verb="tag")
        self.call(self.ec2.create_tags, Resources=[found[0]["GroupId"]], Tags=tags)
        return "tagged"

    def _retry_dependency(self, delete: Callable[[], Any], what: str) -> bool:
        """Run a delete, retrying while something still depends on the resource.

        Returns False when the resource vanished meanwhile (someone else won).
        """
        outcome = {"deleted": True}

        def attempt() -> tuple[Verdict, None]:
            try:
                self.call(delete)
            except Exception as exc:
                if is_not_found(exc):
                    outcome["deleted"] = False
                    return "ready", None
                if error_code(exc) in DEPENDENCY_CODES and self.wait:
                    return "pending", None
                raise
            return "ready", None

        try:
            self._poll(attempt, f"delete {what}")
        except DeadlineExceeded as exc:
            raise TeardownError(f"{what}: still in use when the teardown deadline passed") from exc
        return outcome["deleted"]
