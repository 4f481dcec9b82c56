"""What a PostgreSQL drill hands from step to step: frozen values, so no step reads another's leftovers.

preflight decides a :class:`PgPlan` (each backend of the family its own kind: a base backup and
the WAL it needs, a dump, a pgBackRest set, a Barman backup); restore returns :class:`PgRestored`,
the started server and what recovery must reach, which await_ready proves and hands on as the
ready database, from which isolation and the endpoint are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from drills.engines.postgres.backup import BaseBackup
from drills.engines.postgres.plan import PitrPlan
from drills.engines.postgres.server import PgBinaries, PgCluster
from drills.errors import InfrastructureError

__all__ = ["DumpPrepared", "PgPlan", "PgRestored", "PitrPrepared", "planned"]


@dataclass(frozen=True)
class PgPlan:
    """What preflight decided, whatever the source: at least the server binaries to restore with."""

    binaries: PgBinaries


@dataclass(frozen=True)
class PitrPrepared(PgPlan):
    """A PITR from a base backup and WAL archive; restore and await_ready act on it and on nothing else."""

    backup: BaseBackup
    plan: PitrPlan  # the WAL recovery needs and what it must reach


@dataclass(frozen=True)
class DumpPrepared(PgPlan):
    """A pg_dump restore."""


@dataclass(frozen=True)
class PgRestored:
    """The restored server, started, and (PITR) what its recovery must reach: await_ready proves it."""

    cluster: PgCluster
    recovery: PitrPlan | None = None


PlanT = TypeVar("PlanT", bound=PgPlan)


def planned(plan: PgPlan, kind: type[PlanT], backend: str) -> PlanT:
    """``plan`` as the kind this backend's preflight makes (the family shares the restore signature)."""
    if not isinstance(plan, kind):
        raise InfrastructureError(f"{backend}: preflight planned a {type(plan).__name__}, not a {kind.__name__}")
    return plan
