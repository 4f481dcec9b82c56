"""The drill's side of the validators' read-only role: create it once per run, in the connect state.

A backend that can only hand out admin credentials (the local PostgreSQL
superuser, the RDS/Aurora master user with the password the drill just set)
marks its endpoint ``admin``. The connect state routes it (``connect:``
override, an SSM tunnel) and hands it to a :class:`ReaderProvisioner`, which
creates the role with :func:`validators.roles.create_reader` and returns the
endpoint the validators get. The admin endpoint is dropped right there: it is
not stored on the drill, recorded or logged; only its password stays in this
object's memory, so the evidence writer can refuse a record that contains it.

The role name and password are chosen once per run, so a retried connect
state re-asserts the same role instead of leaving several. Its password is
random and held only in memory; the reader gets none when the admin had none
(a local server that trusts its private 0700 socket: a password would be
checked by nobody, and anyone who can open that socket could log in as the
superuser anyway: the socket's permissions are the boundary against other
users, the role is the boundary against the runbook's SQL).
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from drills.errors import InfrastructureError, TransientError
from validators.endpoint import Endpoint, Secret

__all__ = ["ReaderProvisioner"]

log = structlog.get_logger("drills.reader")

# A server that refuses the admin's credentials will refuse them on every retry.
_AUTH_FAILED = re.compile(r"password authentication failed|Access denied for user|\(1045,", re.IGNORECASE)
_NOT_REACHED = re.compile(r"^cannot connect to ")


class ReaderProvisioner:
    """Callable ``admin endpoint -> reader endpoint`` for one run (see the module docstring)."""

    def __init__(self) -> None:
        from validators.roles import new_reader_name, new_reader_password

        self.name = new_reader_name()
        self._password = new_reader_password()
        self._admin_password: Secret | None = None
        self.facts: dict[str, Any] | None = None

    def secrets(self) -> list[str]:
        """The admin's password (once used): the evidence writer refuses a record that contains it."""
        return [self._admin_password.reveal()] if self._admin_password is not None else []

    def __call__(self, admin: Endpoint) -> Endpoint:
        from validators.errors import ValidatorError
        from validators.roles import create_reader

        self._admin_password = admin.password
        password: Secret | None = self._password
        if admin.engine == "postgres" and admin.password is None:
            password = None  # trust over the private socket: see the module docstring
        try:
            reader, facts = create_reader(admin, self.name, password)
        except ValidatorError as exc:
            message = str(exc)
            if not _NOT_REACHED.match(message):  # connected, but the admin may not create the role
                raise InfrastructureError(message) from None
            if _AUTH_FAILED.search(message):
                raise InfrastructureError(message, hint="the restored database refused the credentials") from None
            raise TransientError(message) from None  # not accepting connections yet: the state retries
        self.facts = facts
        log.info("validators_role_created", **{k: v for k, v in facts.items() if k != "password"}, admin=admin.user)
        return reader
