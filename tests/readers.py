"""The validators' read-only role on the shared test servers, the way a drill creates it.

Tests that run validators use :func:`reader_for`: the shop's endpoint (the
superuser ``drill``) marked admin creates a ``drill_reader_*`` role with
:func:`validators.roles.create_reader`, the test gets its endpoint, and the
role is dropped afterwards (roles and MySQL users outlive a dropped database).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from servers import MariaDbServer, PgServer

from validators.endpoint import Endpoint
from validators.roles import create_reader, new_reader_name, new_reader_password

__all__ = ["drop_reader", "reader_for"]


def drop_reader(server: PgServer | MariaDbServer, name: str, database: str) -> None:
    if isinstance(server, PgServer):
        if server.sql("select 1 from pg_roles where rolname = %s", (name,)):
            server.run(f'drop owned by "{name}"', f'drop role "{name}"', database=database)
        return
    for host in ("%", "localhost"):
        server.sql("drop user if exists %s@%s", (name, host))


@contextlib.contextmanager
def reader_for(
    server: PgServer | MariaDbServer, ep: Endpoint, **kwargs: Any
) -> Iterator[tuple[Endpoint, dict[str, Any]]]:
    """``(reader endpoint, what was granted)`` for ``ep``'s database; dropped on exit."""
    name = new_reader_name()
    try:
        yield create_reader(replace(ep, admin=True), name, new_reader_password(), **kwargs)
    finally:
        drop_reader(server, name, ep.database)
