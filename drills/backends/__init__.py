"""Backends: where restores happen. One module per backend, imported lazily.

:func:`backend_for` maps a runbook source kind (or, after a crash, the
``backend`` name stored with a journaled resource) to the backend class, so
the CLI never imports boto3 or a server helper it does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drills.backends.base import BackendFactory

__all__ = ["BACKEND_MODULES", "SOURCE_BACKENDS", "backend_factory", "check_backup"]

# backend name -> module holding `create(source, settings) -> Backend`
BACKEND_MODULES: dict[str, str] = {
    "local-postgres": "drills.engines.postgres.backend",
    "local-mariadb": "drills.engines.mariadb.backend",
    "rds": "drills.aws.rds",
    "aurora": "drills.aws.aurora",
    "pgbackrest": "drills.engines.postgres.pgbackrest",
    "barman": "drills.engines.postgres.barman",
}

# runbook source.kind -> backend name
SOURCE_BACKENDS: dict[str, str] = {
    "postgres-pitr": "local-postgres",
    "postgres-dump": "local-postgres",
    "mariadb-pitr": "local-mariadb",
    "mariadb-dump": "local-mariadb",
    "rds-snapshot": "rds",
    "rds-pitr": "rds",
    "aurora-snapshot": "aurora",
    "aurora-pitr": "aurora",
    "pgbackrest": "pgbackrest",
    "barman": "barman",
}


def backend_factory(name: str) -> BackendFactory:
    """The ``create`` function of a backend, importing its module on demand."""
    module = importlib.import_module(BACKEND_MODULES[name])
    factory: BackendFactory = module.create
    return factory


def check_backup(source: Any) -> dict[str, Any]:
    """The backup checks that need no server, as ``drill validate`` runs them before the night of a drill.

    A backend module may define ``check_backup(source) -> dict`` (facts about what it found); it raises
    :class:`~drills.errors.BackupDefect` naming the defect. Backends without one (AWS: the snapshot
    lives in the account) have nothing to check offline.
    """
    module = importlib.import_module(BACKEND_MODULES[SOURCE_BACKENDS[source.kind]])
    checker = getattr(module, "check_backup", None)
    if checker is None:
        return {}
    facts: dict[str, Any] = checker(source)
    return facts
