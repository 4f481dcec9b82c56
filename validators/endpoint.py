"""Where a restored database can be reached, and with what secret.

The password is wrapped in :class:`Secret` so that it never reaches a log or
an evidence record by accident: its ``repr``/``str`` are masked and
:meth:`Endpoint.public` drops it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = ["Endpoint", "Engine", "Secret"]

Engine = Literal["postgres", "mysql"]


class Secret:
    """A string that refuses to be printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Endpoint:
    """A database endpoint.

    ``host`` may be a directory (a Unix socket dir for PostgreSQL) or a socket
    path for MySQL (``unix_socket``). ``reported_host``/``reported_port`` keep
    what the backend reported (e.g. the RDS endpoint) when the connection is
    routed elsewhere (a tunnel); evidence records the reported one.

    ``admin`` marks credentials that can write (a superuser, the RDS master
    user). The drill uses them only to create the validators' read-only role
    (:mod:`validators.roles`); :func:`~validators.runner.run_validators`
    refuses to run a single check with them.
    """

    engine: Engine
    host: str
    port: int
    database: str
    user: str
    password: Secret | None = field(default=None, repr=False)
    unix_socket: str | None = None
    reported_host: str | None = None
    reported_port: int | None = None
    options: dict[str, str] = field(default_factory=dict)
    admin: bool = False

    def routed_to(self, host: str, port: int) -> Endpoint:
        """The same database reached through another address (e.g. an SSM tunnel)."""
        return replace(
            self,
            host=host,
            port=port,
            unix_socket=None,
            reported_host=self.reported_host or self.host,
            reported_port=self.reported_port or self.port,
        )

    def public(self) -> dict[str, Any]:
        """What may be logged or recorded: no secret."""
        out: dict[str, Any] = {
            "engine": self.engine,
            "host": self.reported_host or self.host,
            "port": self.reported_port or self.port,
            "database": self.database,
            "user": self.user,
        }
        if self.reported_host and self.reported_host != self.host:
            out["connected_via"] = {"host": self.host, "port": self.port}
        if self.unix_socket:
            out["unix_socket"] = self.unix_socket
        return out
