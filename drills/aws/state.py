"""What an AWS drill hands from step to step: frozen values, so no step reads another's leftovers.

preflight decides an :class:`AwsPlan` (the recovery point and the network proven isolated),
restore returns :class:`AwsRestored` (the drill's security groups and subnet group, and what was
proven about them), await_ready returns :class:`AwsReady` (the database as AWS reports it once
enforced, and how to reach it). ``verify_isolation`` reads every fact from the last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drills.aws.isolation import NetworkView
from drills.aws.recovery import RecoveryPoint
from drills.backends.base import Fact
from validators.endpoint import Secret

__all__ = ["AwsPlan", "AwsReady", "AwsRestored"]


@dataclass(frozen=True)
class AwsPlan:
    """What preflight decided: restore this recovery point into this network, proven isolated before."""

    recovery_point: RecoveryPoint
    network: NetworkView
    facts: tuple[Fact, ...]  # the network's isolation, checked before anything is created


@dataclass(frozen=True)
class AwsRestored:
    """What restore created or chose for the database, and what it proved about them."""

    plan: AwsPlan
    security_group_ids: tuple[str, ...]
    subnet_group: str
    facts: tuple[Fact, ...]  # the plan's facts, then those about the drill's own security group


@dataclass(frozen=True)
class AwsReady:
    """The restored database once AWS reports it available and enforced."""

    restored: AwsRestored
    described: Mapping[str, Any]  # the instance as AWS last reported it (Aurora: with the cluster's placement)
    address: str | None
    port: int
    user: str | None
    password: Secret | None  # set by the drill, only in memory; None with IAM auth
