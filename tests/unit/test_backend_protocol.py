"""Every backend speaks the protocol the machine calls: checked by mypy here, and by the signatures at run time.

The registry imports backend modules by name (``importlib``), so nothing else makes mypy compare a
backend class with :class:`~drills.backends.base.Backend`; the functions below do, and
``mypy --strict`` (which covers ``tests/``) fails on a backend that drifts from it.
"""

from __future__ import annotations

import inspect

import pytest

from drills.aws.aurora import AuroraBackend
from drills.aws.rds import RdsBackend
from drills.aws.state import AwsPlan, AwsReady, AwsRestored
from drills.backends import backend_factory, declarations
from drills.backends.base import Backend
from drills.engines.mariadb.backend import LocalMariadb
from drills.engines.mariadb.steps import MariaPlan, MariaReady, MariaRestored
from drills.engines.postgres.backend import LocalPostgres
from drills.engines.postgres.barman import Barman
from drills.engines.postgres.pgbackrest import Pgbackrest
from drills.engines.postgres.steps import PgPlan, PgRestored


def _postgres(b: LocalPostgres | Pgbackrest | Barman) -> Backend[PgPlan, PgRestored, PgRestored]:
    return b  # mypy: each PostgreSQL backend is a Backend of its declared step types


def _mariadb(b: LocalMariadb) -> Backend[MariaPlan, MariaRestored, MariaReady]:
    return b


def _aws(b: RdsBackend | AuroraBackend) -> Backend[AwsPlan, AwsRestored, AwsReady]:
    return b


STATIC_CHECKS = (_postgres, _mariadb, _aws)  # mypy --strict compares each backend with the protocol here

# the machine's order: what each step takes before the context, after ``self``
STEPS = {
    "preflight": ["ctx"],
    "restore": ["plan", "ctx"],
    "await_ready": ["restored", "ctx"],
    "verify_isolation": ["ready", "ctx"],
    "endpoint": ["ready", "ctx"],
    "teardown": ["resource", "ctx"],
}


@pytest.mark.parametrize("name", sorted(declarations()))
def test_each_registered_backend_takes_what_the_step_before_handed_on(name: str) -> None:
    create = backend_factory(name)
    made = inspect.signature(create).return_annotation
    cls = getattr(inspect.getmodule(create), made) if isinstance(made, str) else made
    for step, params in STEPS.items():
        got = list(inspect.signature(getattr(cls, step)).parameters)[1:]
        assert got == params, f"{cls.__name__}.{step}{tuple(got)}"
    for hook in ("recovery_proof", "target_facts", "connection_hint"):
        assert callable(getattr(cls, hook))
    assert not hasattr(cls, "isolation_facts")  # isolation comes from verify_isolation alone
