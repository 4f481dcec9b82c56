"""What the RDS and Aurora backends share: preflight, isolation setup, credentials, teardown.

The two backends differ only in what they restore (an instance, or a cluster
plus its writer instance). Everything that makes a drill *safe* is here, once:

* identifiers chosen up front (``drill-<runbook>-<run hash>``) and every
  resource registered with the run's journal before the call that creates it;
* isolation proven before any restore call, and re-proven on what AWS reports
  after it (never trusting the request parameters: moto, and occasionally AWS,
  keep the source's ``PubliclyAccessible``/``DeletionProtection``);
* a fresh master password only in memory (:class:`~validators.endpoint.Secret`);
* teardown from the :class:`~drills.resources.Resource` record alone, refusing
  anything without this run's tag.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from drills.aws.calls import (
    TAG_EXPIRES,
    TAG_RUN_ID,
    AwsCaller,
    Tolerated,
    aws_errors,
    drill_identifier,
    drill_tags,
    error_code,
    kept_tags,
    tag_value,
    tolerate,
)
from drills.aws.deleter import Deleter
from drills.aws.isolation import (
    NetworkView,
    check_restored,
    check_security_group,
    collect,
    evaluate,
    raise_if_violated,
    runner_rule,
    same_rule,
)
from drills.aws.options import AwsOptions
from drills.aws.preflight import check_free, check_kms, check_quota
from drills.aws.recovery import RecoveryPoint, event_time
from drills.aws.state import AwsPlan, AwsReady, AwsRestored
from drills.backends.base import BackendSettings, Fact, PreflightReport, StepContext
from drills.clock import iso
from drills.errors import (
    DrillError,
    InfrastructureError,
    IsolationError,
    PreflightError,
    TeardownError,
)
from drills.resources import Resource, TeardownResult
from drills.wait import PollResult
from validators.endpoint import Endpoint, Secret

__all__ = ["CLUSTER", "DEFAULT_TTL_SECONDS", "INSTANCE", "AwsBackend"]

# Why the default IAM policy has no rds-db:connect (docs/aws.md, "IAM database authentication").
IAM_AUTH_WARNING = (
    "iam_auth: rds-db:connect cannot be limited to drill copies (their resource ids are unknown until they "
    "exist, and the action takes no tag conditions): the drill role may log in as this user to every database "
    "in the account that has it; prefer the default password auth (docs/aws.md)"
)
DEFAULT_TTL_SECONDS = 6 * 3600  # a normal drill's resources are sweepable after this
DEFAULT_PORTS = {"postgres": 5432, "aurora-postgresql": 5432, "mysql": 3306, "mariadb": 3306, "aurora-mysql": 3306}

INSTANCE = "rds-instance"
CLUSTER = "rds-cluster"
SUBNET_GROUP = "rds-subnet-group"
SECURITY_GROUP = "ec2-security-group"


class AwsBackend:
    """Base of the RDS and Aurora backends (see module docstring).

    Steps hand each other frozen values (:mod:`drills.aws.state`); what stays on the backend is for
    the evidence (``target_facts``, ``connection_hint``) and for a retried restore (the security group).
    """

    name: str = "aws"
    engine_family: ClassVar[str] = ""

    def __init__(self, source: AwsOptions, settings: BackendSettings) -> None:
        self.source = source
        self.settings = settings
        self._session: Any = settings.aws_session
        self._clients: dict[tuple[str, str], Any] = {}
        runbook = settings.runbook_name or "runbook"
        self.base_id = drill_identifier(runbook, settings.run_id)
        iso_cfg = source.isolation
        self.creates_sg = not iso_cfg.security_group_ids
        self.creates_subnet_group = not iso_cfg.db_subnet_group
        self.sg_name = self.base_id
        self.subnet_group_name = iso_cfg.db_subnet_group or self.base_id
        self.port = source.port or DEFAULT_PORTS[source.engine]
        # a retried restore finds the drill's security group made (ids and what was proven about it)
        self._made_sg: tuple[list[str], list[Fact]] | None = None
        self._tags: list[dict[str, str]] | None = None
        self._user: str | None = source.master_username
        self._address: str | None = None
        self._target: dict[str, Any] = {}
        self._expires_at: str | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3  # lazily: the CLI must start fast

            self._session = boto3.Session(region_name=self.source.region)
        return self._session

    @property
    def region(self) -> str:
        region = self.source.region or self.session.region_name
        if not region:
            raise PreflightError("no AWS region", hint="set source.region in the runbook or AWS_DEFAULT_REGION")
        return str(region)

    def client(self, service: str, region: str | None = None) -> Any:
        from drills.aws.calls import client_config

        key = (service, region or self.region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=key[1], config=client_config())
        return self._clients[key]

    def caller(self, ctx: StepContext) -> AwsCaller:
        def on_retry(op: str, exc: BaseException) -> None:
            ctx.log.info("aws.retry", op=op, code=error_code(exc))

        # a fleet's shared API budget (drills.aws.budget), when the drill runs in one
        return AwsCaller(ctx.clock, ctx.deadline_ns, on_retry=on_retry, limiter=self.settings.extra.get("aws_limiter"))

    @property
    def ttl(self) -> timedelta:
        """How long a created resource is ours before the sweeper may take it, should this run die.

        Incident mode (``--keep``) does not change it: a drill that never passed keeps nothing, and one
        that passed moves the expiry of what it keeps to the end of the TTL (:meth:`keep`), counted from
        then, not from a restore that may have taken hours.
        """
        return timedelta(seconds=int(self.settings.extra.get("ttl_seconds", DEFAULT_TTL_SECONDS)))

    def tags(self, ctx: StepContext) -> list[dict[str, str]]:
        if self._tags is None:
            self._tags = drill_tags(self.settings.run_id, self.settings.runbook_name, ctx.clock.now(), self.ttl)
            self._expires_at = tag_value(self._tags, TAG_EXPIRES)
        return self._tags

    def protected(self, rp: RecoveryPoint | None = None) -> list[str]:
        """Identifiers that teardown must never touch: the drill's sources (and the recovery point's, once known;
        every resource records them, so teardown from a record keeps them too)."""
        out = [rp.source_identifier] if rp else []
        for name in ("source_instance", "source_cluster", "latest_snapshot_of"):
            value = getattr(self.source, name, None)
            if value:
                out.append(str(value))
        return sorted(set(out))

    def resource(self, kind: str, ident: str, plan: AwsPlan, **attrs: Any) -> Resource:
        return Resource(
            kind=kind,
            id=ident,
            backend=self.name,
            attrs={
                "region": self.region,
                "run_id": self.settings.run_id,
                "runbook": self.settings.runbook_name,
                "protected": self.protected(plan.recovery_point),
                **attrs,
            },
        )

    def _adopt(self, kind: str, ident: str, tags: Any) -> None:
        """An identifier we meant to create exists: ours from a retried call, or a collision."""
        owner = tag_value(tags, TAG_RUN_ID)
        if owner != self.settings.run_id:
            raise InfrastructureError(
                f"{kind} {ident} already exists and is not this run's (run-id tag {owner!r})",
                hint="a previous run with the same id? run `drill sweep`, or choose another run id",
            )

    def _mark(self, ctx: StepContext, name: str, at: datetime, source: str, precision_ms: int) -> None:
        ctx.mark(name, iso(at), source, precision_ms)

    def _mark_polled(
        self, ctx: StepContext, call: AwsCaller, name: str, result: PollResult[Any], *, source_type: str, ident: str
    ) -> None:
        """Mark when a state was reached: an RDS event inside the poll window if any, else its midpoint."""
        when = event_time(call, self.client("rds"), source_type, ident, (result.previous_at, result.seen_at))
        if when is not None:
            self._mark(ctx, name, when, "rds-event", 1000)
        else:
            self._mark(ctx, name, result.estimate, "runner-clock", result.precision_ms)

    def _snapshot_ref(self, rp: RecoveryPoint) -> str | None:
        """The snapshot as the restore call should name it: the ARN only when the runbook gave one (shared)."""
        given = str(getattr(self.source, "snapshot", None) or "")
        return rp.snapshot_arn if given.startswith("arn:") else rp.snapshot_id

    # ------------------------------------------------------------------ subclass hooks
    def _recovery_point(self, call: AwsCaller) -> RecoveryPoint:
        raise NotImplementedError

    def _identifiers_to_check(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _quota_names(self) -> list[str]:
        return ["DBInstances"]

    # ------------------------------------------------------------------ preflight
    def preflight(self, ctx: StepContext) -> PreflightReport[AwsPlan]:
        call = self.caller(ctx)
        with aws_errors("preflight", preflight=True):
            who = call(self.client("sts").get_caller_identity)
            rp = self._recovery_point(call)
            if rp.engine != self.source.engine:
                raise PreflightError(
                    f"the backup is {rp.engine}, the runbook says {self.source.engine}", hint="fix source.engine"
                )
            facts: dict[str, Any] = {
                "kms": check_kms(call, lambda r: self.client("kms", r), rp, self.source.kms_key_id)
            }
            checks = list(self._identifiers_to_check())
            if self.creates_subnet_group:
                checks.append(("subnet-group", self.subnet_group_name))
            sg_name = self.sg_name if self.creates_sg else None
            facts["identifiers_free"] = check_free(call, self.client("rds"), self.client("ec2"), checks, sg_name)
            facts["quota"] = check_quota(call, self.client("rds"), self._quota_names())
            warnings: list[str] = []
            if facts["quota"].get("warning"):
                ctx.log.warning("aws.quota_unchecked", detail=facts["quota"]["warning"])
                warnings.append(f"quota: {facts['quota']['warning']}")
            if self.source.iam_auth:
                warnings.append(IAM_AUTH_WARNING)
            if warnings:
                facts["warnings"] = warnings
            view, proven = self._check_isolation(call)
        facts["isolation"] = [f.to_dict() for f in proven]
        facts["planned"] = {"identifier": self.base_id, "expires_in_seconds": int(self.ttl.total_seconds())}
        return PreflightReport(
            source={
                "engine": rp.engine,
                "version": rp.engine_version,
                "identifier": rp.source_identifier,
                "arn": rp.source_arn,
                "account": who.get("Account"),
                "caller": who.get("Arn"),
                "region": self.region,
            },
            recovery_point=rp.to_dict(),
            plan=AwsPlan(rp, view, tuple(proven)),
            facts=facts,
        )

    def _check_isolation(self, call: AwsCaller) -> tuple[NetworkView, list[Fact]]:
        """The network as AWS describes it and its isolation facts; an IsolationError (with them) if one fails."""
        cfg = self.source.isolation
        planned = None
        if self.creates_sg:
            planned = {"port": self.port, "source": cfg.runner_security_group_id or cfg.runner_cidr}
        view = collect(
            call,
            self.client("ec2"),
            self.client("rds"),
            vpc_id=cfg.vpc_id,
            subnet_ids=cfg.subnet_ids,
            db_subnet_group=cfg.db_subnet_group,
            security_group_ids=cfg.security_group_ids,
            planned_ingress=planned,
            allowed_routes=cfg.allowed_routes,
        )
        facts = evaluate(view)
        raise_if_violated(facts)
        return view, facts

    # ------------------------------------------------------------------ restore: network
    def _prepare(self, ctx: StepContext, call: AwsCaller, plan: AwsPlan) -> AwsRestored:
        """The drill SG and subnet group (registered first), on the network preflight proved isolated."""
        raise_if_violated(plan.facts)
        sg_ids, sg_facts = self._ensure_security_group(ctx, call, plan)
        subnet_group = self._ensure_subnet_group(ctx, call, plan)
        return AwsRestored(plan, tuple(sg_ids), subnet_group, (*plan.facts, *sg_facts))

    def _ensure_security_group(self, ctx: StepContext, call: AwsCaller, plan: AwsPlan) -> tuple[list[str], list[Fact]]:
        """The runbook's security groups, or the drill's own (made once per run) and the facts proven about it."""
        if self.source.isolation.security_group_ids:
            return list(self.source.isolation.security_group_ids), []
        if self._made_sg is not None:
            return self._made_sg
        ec2, vpc = self.client("ec2"), plan.network.vpc_id
        ctx.register(self.resource(SECURITY_GROUP, self.sg_name, plan, vpc_id=vpc))
        try:
            gid = call(
                ec2.create_security_group,
                GroupName=self.sg_name,
                Description=f"restore-drills {self.settings.runbook_name} run {self.settings.run_id}",
                VpcId=vpc,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": self.tags(ctx)}],
            )["GroupId"]
        except Exception as exc:
            if error_code(exc) != "InvalidGroup.Duplicate":
                raise
            found = call(
                ec2.describe_security_groups,
                Filters=[{"Name": "group-name", "Values": [self.sg_name]}, {"Name": "vpc-id", "Values": [vpc]}],
            )["SecurityGroups"]
            self._adopt("security group", self.sg_name, found[0].get("Tags") if found else None)
            gid = found[0]["GroupId"]
        rule = runner_rule(self.port, self.source.isolation.runner_security_group_id, self.source.isolation.runner_cidr)
        with contextlib.suppress(Tolerated):
            tolerate(call, ec2.authorize_security_group_ingress, "InvalidPermission.Duplicate", GroupId=gid,
                      IpPermissions=[rule])  # fmt: skip
        # The database needs no egress: remove the default allow-all rule.
        with contextlib.suppress(Tolerated):
            tolerate(
                call,
                ec2.revoke_security_group_egress,
                "InvalidPermission.NotFound",
                GroupId=gid,
                IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
            )
        sg = call(ec2.describe_security_groups, GroupIds=[gid])["SecurityGroups"][0]
        facts = check_security_group(sg, vpc)
        extra = [p for p in sg.get("IpPermissions", []) if not same_rule(p, rule)]
        facts.append(
            Fact(
                "drill-sg-only-runner-ingress",
                gid,
                not extra,
                "only the runner rule" if not extra else f"unexpected ingress rules: {extra}",
            )
        )
        raise_if_violated([*plan.facts, *facts], when="after creating the drill security group")
        self._made_sg = ([gid], facts)
        return self._made_sg

    def _ensure_subnet_group(self, ctx: StepContext, call: AwsCaller, plan: AwsPlan) -> str:
        if not self.creates_subnet_group:
            return self.subnet_group_name
        rds = self.client("rds")
        ctx.register(self.resource(SUBNET_GROUP, self.subnet_group_name, plan))
        try:
            call(
                rds.create_db_subnet_group,
                DBSubnetGroupName=self.subnet_group_name,
                DBSubnetGroupDescription=f"restore-drills run {self.settings.run_id}",
                SubnetIds=list(self.source.isolation.subnet_ids),
                Tags=self.tags(ctx),
            )
        except Exception as exc:
            if error_code(exc) != "DBSubnetGroupAlreadyExists":
                raise
            group = call(rds.describe_db_subnet_groups, DBSubnetGroupName=self.subnet_group_name)["DBSubnetGroups"]
            tags = call(rds.list_tags_for_resource, ResourceName=group[0]["DBSubnetGroupArn"]).get("TagList")
            self._adopt("DB subnet group", self.subnet_group_name, tags)
        return self.subnet_group_name

    # ------------------------------------------------------------------ after restore
    def _enforce_instance(
        self, ctx: StepContext, call: AwsCaller, db: Mapping[str, Any], password: Secret | None
    ) -> dict[str, Any] | None:
        """Enforce private/unprotected/no-backups (and the password) on what AWS reports; return the modify result."""
        mods: dict[str, Any] = {}
        in_cluster = bool(db.get("DBClusterIdentifier"))
        if db.get("PubliclyAccessible"):
            mods["PubliclyAccessible"] = False
        if db.get("DeletionProtection"):
            mods["DeletionProtection"] = False
        if not in_cluster and db.get("BackupRetentionPeriod"):
            mods["BackupRetentionPeriod"] = 0
        if not in_cluster and self.source.iam_auth and not db.get("IAMDatabaseAuthenticationEnabled"):
            mods["EnableIAMDatabaseAuthentication"] = True
        if password is not None:
            mods["MasterUserPassword"] = password.reveal()
        if not mods:
            return None
        ctx.log.info("aws.enforce", identifier=db.get("DBInstanceIdentifier"), changes=sorted(mods))
        out: dict[str, Any] = call(
            self.client("rds").modify_db_instance,
            DBInstanceIdentifier=db["DBInstanceIdentifier"],
            ApplyImmediately=True,
            **mods,
        )["DBInstance"]
        return out

    def verify_isolation(self, ready: AwsReady, ctx: StepContext) -> list[Fact]:
        """Every isolation fact of the drill: the network (preflight), the drill's security group (restore), and
        the restored database as AWS reports it after enforcing, never as it was requested."""
        restored = ready.restored
        facts = [
            *restored.facts,
            *check_restored(ready.described, restored.subnet_group, list(restored.security_group_ids)),
        ]
        raise_if_violated(facts, when="after restoring")
        return facts

    @staticmethod
    def _check_unprotected(db: Mapping[str, Any], what: str) -> None:
        """Teardown must be able to delete it: deletion protection off, as AWS reports it."""
        if db.get("DeletionProtection"):
            raise InfrastructureError(f"deletion protection still on for {what}")

    def new_password(self) -> Secret | None:
        return None if self.source.iam_auth else Secret(secrets.token_urlsafe(24))

    # ------------------------------------------------------------------ results
    def target_facts(self) -> dict[str, Any]:
        return dict(self._target)

    def endpoint(self, ready: AwsReady, ctx: StepContext) -> Endpoint:
        if ready.address is None or ready.user is None:
            raise InfrastructureError(f"{self.name}: AWS reported no endpoint address or master user")
        engine: Literal["postgres", "mysql"] = "postgres" if "postgres" in self.source.engine else "mysql"
        password = ready.password
        options: dict[str, str] = {}
        if self.source.iam_auth:
            with aws_errors("generate_db_auth_token"):
                token = self.client("rds").generate_db_auth_token(
                    DBHostname=ready.address, Port=ready.port, DBUsername=ready.user, Region=self.region
                )
            password = Secret(token)
            options = {"auth": "iam", "tls": "required"}
        return Endpoint(
            engine=engine,
            host=ready.address,
            port=ready.port,
            database=self.source.database,
            user=ready.user,
            password=password,
            options=options,
            # the master user and the password the drill set: used only to create the validators' read-only role.
            # With IAM auth the drill set nothing: master_username names a read-only user, which the validators'
            # session check proves (or fails the drill)
            admin=not self.source.iam_auth,
        )

    def recovery_proof(self) -> dict[str, Any] | None:
        return None  # AWS restores to the time it reports; the restorable range is in the recovery point

    def connection_hint(self) -> str:
        """How to reach a database kept for an incident (no secret in it)."""
        if self._address is None:
            return "nothing restored yet"
        return (
            f"{self._address}:{self.port} (user {self._user}, database {self.source.database}); "
            f"kept until {self._expires_at}. From outside the VPC: aws ssm start-session --target <bastion-id> "
            "--document-name AWS-StartPortForwardingSessionToRemoteHost "
            f'--parameters \'{{"host":["{self._address}"],"portNumber":["{self.port}"],'
            f'"localPortNumber":["{self.port}"]}}\'. Reset the password with modify-db-'
            f"{'cluster' if self.engine_family == 'aurora' else 'instance'} to log in; "
            "`drill sweep` removes it after expiry."
        )

    # ------------------------------------------------------------------ teardown
    def _deleter(self, resource: Resource, ctx: StepContext, verb: str) -> Deleter:
        owner = resource.attrs.get("run_id")
        if owner != self.settings.run_id:
            raise TeardownError(
                f"refusing to {verb} {resource.kind} {resource.id}: recorded for run {owner!r}, "
                f"this is run {self.settings.run_id!r}"
            )
        region = str(resource.attrs.get("region") or self.region)
        protected = frozenset(self.protected()) | frozenset(resource.attrs.get("protected", []))
        return Deleter(
            rds=self.client("rds", region),
            ec2=self.client("ec2", region),
            call=self.caller(ctx),
            run_id=self.settings.run_id,
            protected=protected,
        )

    def keep(self, resource: Resource, ctx: StepContext, until: datetime) -> str:
        """Incident mode: keep this run's resource until ``until``, and say so on the resource itself.

        Its ``expires-at`` tag moves to ``until`` and ``kept-at`` marks it kept, so the sweeper (on
        any machine) deletes it once that time passes, whatever ``--older-than`` says.
        """
        deleter = self._deleter(resource, ctx, "keep")
        tags = kept_tags(self.settings.run_id, ctx.clock.now(), until)
        with aws_errors(f"keep {resource.kind} {resource.id}"):
            detail = deleter.retag(resource.kind, resource.id, tags, resource.attrs.get("vpc_id"))
        self._expires_at = iso(until)
        if self._target:
            self._target["expires_at"] = self._expires_at
        ctx.log.info("aws.kept", kind=resource.kind, id=resource.id, expires_at=self._expires_at, detail=detail)
        return f"{detail}: {TAG_EXPIRES}={self._expires_at}"

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        deleter = self._deleter(resource, ctx, "tear down")
        with aws_errors(f"teardown {resource.kind} {resource.id}"):
            try:
                if resource.kind == INSTANCE:
                    detail = deleter.instance(resource.id)
                elif resource.kind == CLUSTER:
                    detail = deleter.cluster(resource.id)
                elif resource.kind == SUBNET_GROUP:
                    detail = deleter.subnet_group(resource.id)
                elif resource.kind == SECURITY_GROUP:
                    detail = deleter.security_group(resource.id, resource.attrs.get("vpc_id"))
                else:
                    raise TeardownError(f"unknown resource kind {resource.kind!r} for backend {self.name}")
            except (IsolationError, TeardownError):
                raise
            except DrillError as exc:
                raise TeardownError(f"{resource.kind} {resource.id}: {exc}") from exc
        ctx.log.info("aws.teardown", kind=resource.kind, id=resource.id, detail=detail)
        return TeardownResult(resource=resource, deleted=True, detail=detail, verified_at=iso(ctx.clock.now()))
