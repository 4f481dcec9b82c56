"""Endpoints from connection URLs (``drill baseline capture --dsn ...``).

Accepted forms::

    postgresql://user[:password]@host[:port]/dbname[?host=/run/postgresql]
    mysql://user[:password]@host[:port]/dbname[?unix_socket=/run/mysqld/mysqld.sock]

A password in the URL works, but shells keep history: the environment
(``PGPASSWORD`` / ``MYSQL_PWD``) is read when the URL has none. The password
is wrapped in :class:`Secret` at once, so it is masked from here on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from validators.endpoint import Endpoint, Engine, Secret
from validators.errors import ValidatorError

__all__ = ["endpoint_from_dsn"]

_SCHEMES: dict[str, tuple[Engine, int, str]] = {
    "postgresql": ("postgres", 5432, "PGPASSWORD"),
    "postgres": ("postgres", 5432, "PGPASSWORD"),
    "mysql": ("mysql", 3306, "MYSQL_PWD"),
    "mariadb": ("mysql", 3306, "MYSQL_PWD"),
}


def endpoint_from_dsn(dsn: str, *, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Parse ``dsn`` into an :class:`Endpoint`; ValidatorError (without the password) when malformed."""
    env = os.environ if environ is None else environ
    try:
        url = urlsplit(dsn)
        port_given = url.port
    except ValueError as exc:
        raise ValidatorError(f"not a database URL: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValidatorError(
            f"unsupported URL scheme {scheme!r}", hint="use postgresql://user@host/db or mysql://user@host/db"
        )
    engine, default_port, env_var = _SCHEMES[scheme]
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    database = unquote(url.path.lstrip("/")) or ("postgres" if engine == "postgres" else "")
    if not database:
        raise ValidatorError("the URL names no database (…/dbname)")
    user = unquote(url.username or "") or ("postgres" if engine == "postgres" else "root")
    password = unquote(url.password) if url.password is not None else env.get(env_var)
    host = query.pop("host", None) or url.hostname or ("/var/run/postgresql" if engine == "postgres" else "localhost")
    unix_socket = query.pop("unix_socket", None) if engine == "mysql" else None
    return Endpoint(
        engine=engine,
        host=host,
        port=port_given or default_port,
        database=database,
        user=user,
        password=Secret(password) if password else None,
        unix_socket=unix_socket,
        options=query,
    )
