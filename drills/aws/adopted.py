"""An RDS instance that Step Functions restored, taken over by ``drill sfn-worker`` for the rest of the drill.

The exported state machine (:mod:`drills.asl`) restores, waits and isolates with ``aws-sdk:rds``
tasks, then hands the drill to a worker. The worker runs the ordinary machine with this backend,
so everything after the restore request is the code a local ``drill run`` uses:

* ``preflight`` is :class:`~drills.aws.rds.RdsBackend`'s (recovery point, KMS, route tables and
  security groups, read-only), except that the instance must exist now rather than be free;
* ``restore`` adopts the instance only if its tags say this execution created it (``run-id`` is
  the worker's run id, ``created-by`` is ``step-functions``), and registers it so teardown deletes
  it: the record then attests the teardown, as a local drill's does, and the machine's own
  ``Teardown`` finds it gone (it stays the net when the worker dies);
* ``await_ready`` re-reads what AWS reports and enforces it the same way, and the machine's one
  ``verify_isolation`` holds it to the runbook's subnet group and security groups;
  the password is the one RDS manages in Secrets Manager (``ManageMasterUserPassword``: it never
  appears in the execution's history), read only into memory;
* ``failure`` set: the execution failed before validation (a restore error, a terminal status,
  the deadline). ``restore`` registers the instance (teardown confirms it absent) and raises that
  failure, so the run writes a signed failed record, with teardown, like any failed drill.
"""

from __future__ import annotations

import json
from typing import Any

from drills.aws.backend import INSTANCE
from drills.aws.calls import TAG_RUN_ID, aws_errors, is_not_found, tag_value
from drills.aws.isolation import raise_if_violated
from drills.aws.rds import RdsBackend, wait_instance
from drills.aws.rds_declaration import RdsPitrSource, RdsSnapshotSource
from drills.aws.state import AwsPlan, AwsReady, AwsRestored
from drills.backends.base import BackendSettings, StepContext
from drills.errors import InfrastructureError, IsolationError, RestoreFailed
from validators.endpoint import Secret

__all__ = ["TAG_CREATED_BY", "AdoptedRdsBackend"]

TAG_CREATED_BY = "restore-drills:created-by"
CREATED_BY_STEP_FUNCTIONS = "step-functions"


class AdoptedRdsBackend(RdsBackend):
    """See the module docstring. ``name`` stays ``rds``: after a crash, ``drill teardown`` rebuilds an
    :class:`RdsBackend` from the journal, and its teardown of this instance is the same."""

    def __init__(
        self,
        source: RdsSnapshotSource | RdsPitrSource,
        settings: BackendSettings,
        instance_id: str,
        *,
        failure: str | None = None,
    ) -> None:
        super().__init__(source, settings)
        self.base_id = self.instance_id = instance_id  # the machine's name for it (drills.asl.instance_id_for)
        self.failure = failure

    def _identifiers_to_check(self) -> list[tuple[str, str]]:
        return []  # the instance exists by design: restore() checks it is this execution's

    def restore(self, plan: AwsPlan, ctx: StepContext) -> AwsRestored:
        if self.failure is not None:
            ctx.register(self.resource(INSTANCE, self.instance_id, plan))
            raise RestoreFailed(f"the Step Functions execution failed before validation: {self.failure}")
        raise_if_violated(plan.facts)
        call = self.caller(ctx)
        rds = self.client("rds")
        with aws_errors("adopt the restored instance"):
            try:
                db = call(rds.describe_db_instances, DBInstanceIdentifier=self.instance_id)["DBInstances"][0]
            except Exception as exc:
                if is_not_found(exc):
                    raise RestoreFailed(f"DB instance {self.instance_id} does not exist") from exc
                raise
            tags = db.get("TagList")
            if tags is None:
                tags = call(rds.list_tags_for_resource, ResourceName=db["DBInstanceArn"]).get("TagList", [])
        owner, maker = tag_value(tags, TAG_RUN_ID), tag_value(tags, TAG_CREATED_BY)
        if owner != self.settings.run_id or maker != CREATED_BY_STEP_FUNCTIONS:
            raise IsolationError(
                f"DB instance {self.instance_id} is not this execution's ({TAG_RUN_ID}={owner!r}, "
                f"{TAG_CREATED_BY}={maker!r}): refusing to validate or delete it",
                hint="only an instance the state machine restored for this execution is adopted",
            )
        ctx.register(self.resource(INSTANCE, self.instance_id, plan))
        self._target = {"instance": self.instance_id, "subnet_group": self.subnet_group_name}
        # the export restores into the runbook's reviewed subnet group and security groups (drills.asl): those are
        # what verify_isolation holds the instance to, as AWS reports it
        iso = self.source.isolation
        return AwsRestored(plan, tuple(iso.security_group_ids), self.subnet_group_name, plan.facts)

    def await_ready(self, restored: AwsRestored, ctx: StepContext) -> AwsReady:
        call = self.caller(ctx)
        with aws_errors("await_ready"):
            db = wait_instance(self, ctx, call, self.instance_id, "restore of", modifications=True).value
            # Step Functions asked for all of this; what AWS reports is what counts
            if self._enforce_instance(ctx, call, db, None) is not None:
                wait_instance(self, ctx, call, self.instance_id, "modification of", modifications=True)
            db = call(self.client("rds").describe_db_instances, DBInstanceIdentifier=self.instance_id)["DBInstances"][0]
            self._check_unprotected(db, self.instance_id)
            self._record(db)
            password = None if self.source.iam_auth else self._managed_password(call, db)
        return AwsReady(restored, db, self._address, self.port, self._user, password)

    def _managed_password(self, call: Any, db: dict[str, Any]) -> Secret:
        arn = (db.get("MasterUserSecret") or {}).get("SecretArn")
        if not arn:
            raise InfrastructureError(
                f"DB instance {self.instance_id} has no managed master secret",
                hint="the machine's Isolate step sets ManageMasterUserPassword: re-export it (drill export-asl)",
            )
        value = call(self.client("secretsmanager").get_secret_value, SecretId=arn)
        try:
            doc = json.loads(value["SecretString"])
            password = str(doc["password"])
        except (KeyError, TypeError, ValueError):
            raise InfrastructureError(f"the managed master secret of {self.instance_id} holds no password") from None
        return Secret(password)  # the user stays the instance's MasterUsername (what RDS reports), as _record set it
