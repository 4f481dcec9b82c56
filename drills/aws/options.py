"""What the RDS and Aurora source models share: the restored database's options and its isolation.

Pure pydantic (no boto3), read by the runbook loader through the RDS and Aurora declarations.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drills.backends.declare import SourceModel

__all__ = ["AwsIsolation", "AwsOptions"]


class AwsIsolation(BaseModel):
    """Where the restored database lives. Either subnets (the drill creates the
    subnet group and security group) or existing ones named here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    db_subnet_group: str | None = Field(default=None, description="Use this existing DB subnet group.")
    security_group_ids: tuple[str, ...] = Field(default=(), description="Use these existing security groups.")
    runner_security_group_id: str | None = Field(default=None, description="Ingress source for the drill SG.")
    runner_cidr: str | None = Field(default=None, description="Ingress CIDR for the drill SG (not 0.0.0.0/0).")
    allowed_routes: tuple[str, ...] = Field(
        default=(), description="Routes that may leave the VPC, as `rtb-id:destination` exceptions."
    )

    @model_validator(mode="after")
    def _where(self) -> AwsIsolation:
        if not self.db_subnet_group and not self.subnet_ids:
            raise ValueError("give subnet_ids (the drill creates a subnet group) or db_subnet_group")
        if self.db_subnet_group and self.subnet_ids:
            raise ValueError("give either subnet_ids or db_subnet_group, not both")
        if self.runner_cidr in ("0.0.0.0/0", "::/0"):
            raise ValueError("runner_cidr must not be open to the world")
        if self.runner_cidr and self.runner_security_group_id:
            raise ValueError("give one ingress source: runner_security_group_id or runner_cidr")
        if not self.security_group_ids and not (self.runner_cidr or self.runner_security_group_id):
            # The drill creates its security group; without an ingress source nothing could connect.
            raise ValueError("give runner_security_group_id or runner_cidr (or existing security_group_ids)")
        for route in self.allowed_routes:
            rtb, sep, dest = route.partition(":")
            if not (rtb.startswith("rtb-") and sep and dest):
                raise ValueError(f"allowed_routes entries look like rtb-0abc:10.1.0.0/16, got {route!r}")
        return self


class AwsOptions(SourceModel):
    """The options of every RDS and Aurora source kind (each adds ``kind`` and what to restore from)."""

    region: str | None = None
    engine: Literal["postgres", "mysql", "mariadb", "aurora-postgresql", "aurora-mysql"]
    instance_class: str = "db.t4g.micro"
    engine_version: str | None = None
    parameter_group: str | None = None
    cluster_parameter_group: str | None = None
    option_group: str | None = None
    storage_type: str | None = None
    kms_key_id: str | None = None
    port: int | None = Field(default=None, gt=0, lt=65536, strict=True)
    iam_auth: bool = Field(default=False, description="Connect with IAM auth tokens instead of a fresh password.")
    database: str = Field(default="postgres", description="Database the validators connect to.")
    master_username: str | None = Field(default=None, description="Default: read from the restored resource.")
    isolation: AwsIsolation
