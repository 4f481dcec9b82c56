"""Connections from an :class:`~validators.endpoint.Endpoint`.

The drivers are imported inside the functions: the ``drill`` CLI imports the
validators package on every start and should not pay for psycopg or pymysql
unless a drill actually connects. The password goes straight from
:meth:`Secret.reveal` into the driver's keyword arguments, never into a
conninfo string or a message, and every driver error is translated into a
:class:`ValidatorError` whose text is scrubbed of the password.

Sessions run in UTC (``TimeZone`` / ``time_zone``) so timestamps read by the
freshness and smoke checks mean the same on both engines.

``read_only=True`` (what the validators and baseline capture use) makes every
transaction of the session READ ONLY: ``default_transaction_read_only=on`` as
a startup option on PostgreSQL, ``SET SESSION TRANSACTION READ ONLY`` on
MySQL/MariaDB. A statement can change a session default for the statements
after it, so this is one line of defence, not the boundary: the boundary is
the role's privileges (:mod:`validators.roles`), and the runner gives each
runbook-written query a connection of its own.
"""

from __future__ import annotations

import re
from typing import Any, cast

from validators.dbapi import Connection, fetch_one, redact
from validators.endpoint import Endpoint
from validators.errors import ValidatorError

__all__ = ["cancel_query", "connect", "describe_error", "probe"]

APPLICATION_NAME = "restore-drills"


def describe_error(exc: BaseException, endpoint: Endpoint) -> str:
    """One line ``Type: message`` for an error, with the password masked."""
    text = " ".join(str(exc).split()) or repr(exc)
    secret = endpoint.password.reveal() if endpoint.password is not None else None
    return redact(f"{type(exc).__name__}: {text}", secret)


def _where(endpoint: Endpoint) -> str:
    if endpoint.engine == "mysql" and endpoint.unix_socket:
        place = endpoint.unix_socket
    elif endpoint.host.startswith("/"):
        place = f"{endpoint.host} (socket dir), port {endpoint.port}"
    else:
        place = f"{endpoint.host}:{endpoint.port}"
    return f"{endpoint.engine} database {endpoint.database!r} as {endpoint.user!r} at {place}"


def _tls_postgres(options: dict[str, str]) -> dict[str, Any]:
    """Endpoint options are driver-neutral (``tls``, ``tls_ca``, ``auth``, ``statement_timeout_ms``);
    translate what psycopg takes."""
    out: dict[str, Any] = {}
    if options.get("sslmode") or options.get("sslrootcert"):  # libpq's own words from a --dsn, as given
        out.update({k: options[k] for k in ("sslmode", "sslrootcert") if options.get(k)})
    elif options.get("tls_ca"):
        out.update(sslmode="verify-full", sslrootcert=options["tls_ca"])
    elif options.get("tls") == "required":
        out["sslmode"] = "require"  # IAM auth tokens must never travel in clear text
    return out


def _pg_statement_timeout(options: dict[str, str]) -> str:
    """A server-side limit per statement, so a hung check cannot hold the drill past its deadline."""
    ms = options.get("statement_timeout_ms")
    return f" -c statement_timeout={int(ms)}" if ms else ""


def _mysql_statement_timeout(conn: Any, options: dict[str, str]) -> None:
    """MariaDB's max_statement_time (seconds), else MySQL's max_execution_time (ms, SELECT only)."""
    ms = options.get("statement_timeout_ms")
    if not ms:
        return
    cur = conn.cursor()
    for stmt in (
        f"SET SESSION max_statement_time = {int(ms) / 1000:.3f}",
        f"SET SESSION max_execution_time = {int(ms)}",
    ):
        try:
            cur.execute(stmt)
            return
        except Exception:  # noqa: S112 - the other server flavour's variable is tried next
            continue


def _tls_mysql(options: dict[str, str]) -> dict[str, Any]:
    if options.get("tls_ca"):
        return {"ssl": {"ca": options["tls_ca"], "check_hostname": True}}
    if options.get("tls") == "required":
        return {"ssl": {"check_hostname": False}}
    return {}


def _connect_postgres(endpoint: Endpoint, autocommit: bool, timeout_s: int, read_only: bool) -> Connection:
    import psycopg  # lazy: keep the CLI start fast

    kwargs: dict[str, Any] = {
        "host": endpoint.host,
        "port": endpoint.port,
        "dbname": endpoint.database,
        "user": endpoint.user,
        "connect_timeout": max(2, int(timeout_s)),
        "application_name": APPLICATION_NAME,
        "options": "-c TimeZone=UTC"
        + (" -c default_transaction_read_only=on" if read_only else "")
        + _pg_statement_timeout(endpoint.options),
    }
    kwargs.update(_tls_postgres(endpoint.options))
    if endpoint.password is not None:
        kwargs["password"] = endpoint.password.reveal()
    try:
        conn = psycopg.connect(autocommit=autocommit, **kwargs)
    except (psycopg.Error, OSError) as exc:
        raise ValidatorError(f"cannot connect to {_where(endpoint)}: {describe_error(exc, endpoint)}") from None
    return cast(Connection, conn)


def _mysql_read_only(conn: Any, endpoint: Endpoint) -> None:
    """Every later transaction of the session READ ONLY (autocommit statements included)."""
    try:
        conn.cursor().execute("SET SESSION TRANSACTION READ ONLY")
    except Exception as exc:
        conn.close()
        raise ValidatorError(
            f"connected to {_where(endpoint)} but cannot make the session read-only: {describe_error(exc, endpoint)}"
        ) from None


def _connect_mysql(endpoint: Endpoint, autocommit: bool, timeout_s: int, read_only: bool) -> Connection:
    import pymysql  # lazy: keep the CLI start fast

    kwargs: dict[str, Any] = {
        "user": endpoint.user,
        "database": endpoint.database,
        "connect_timeout": max(1, int(timeout_s)),
        "autocommit": autocommit,
        "charset": "utf8mb4",
        "init_command": "SET time_zone = '+00:00'",
        "program_name": APPLICATION_NAME,
    }
    if endpoint.unix_socket:
        kwargs["unix_socket"] = endpoint.unix_socket
    else:
        kwargs["host"] = endpoint.host
        kwargs["port"] = endpoint.port
    kwargs.update(_tls_mysql(endpoint.options))
    if endpoint.password is not None:
        kwargs["password"] = endpoint.password.reveal()
    try:
        conn = pymysql.connect(**kwargs)
    except (pymysql.err.Error, OSError, TypeError) as exc:
        raise ValidatorError(f"cannot connect to {_where(endpoint)}: {describe_error(exc, endpoint)}") from None
    _mysql_statement_timeout(conn, endpoint.options)
    if read_only:
        _mysql_read_only(conn, endpoint)
    return cast(Connection, conn)


def connect(endpoint: Endpoint, *, autocommit: bool = True, timeout_s: int = 10, read_only: bool = False) -> Connection:
    """A DB-API connection to ``endpoint`` (psycopg 3 or pymysql), or :class:`ValidatorError`.

    Autocommit is the default because validators only read: no transaction
    is left open on the restored server, and a failed query does not poison
    the connection for the next check. ``read_only`` makes each of those
    autocommit transactions READ ONLY (see the module docstring).
    """
    if endpoint.engine == "postgres":
        return _connect_postgres(endpoint, autocommit, timeout_s, read_only)
    if endpoint.engine == "mysql":
        return _connect_mysql(endpoint, autocommit, timeout_s, read_only)
    raise ValidatorError(f"unsupported engine {endpoint.engine!r}")


_VERSION_SQL = {"postgres": "show server_version", "mysql": "select version()"}


def probe(endpoint: Endpoint, *, timeout_s: int = 10) -> str:
    """Connect, ask the server version, disconnect: the runner's ``connect`` state.

    Returns e.g. ``"15.14 (Debian 15.14-0+deb12u1)"`` or
    ``"10.11.19-MariaDB-0+deb12u1"``.
    """
    conn = connect(endpoint, timeout_s=timeout_s, read_only=True)
    try:
        row = fetch_one(conn, _VERSION_SQL[endpoint.engine])
    except Exception as exc:
        raise ValidatorError(f"connected to {_where(endpoint)} but {describe_error(exc, endpoint)}") from None
    finally:
        conn.close()
    return re.sub(r"\s+", " ", str(row[0])).strip() if row else "unknown"


def cancel_query(conn: Connection, endpoint: Endpoint, *, timeout_s: float = 3.0) -> None:
    """Ask the server to cancel whatever ``conn`` is running now; safe to call from another thread.

    Closing a busy connection is not enough: the server goes on running the
    statement until it next writes to the socket or its statement timeout ends
    (up to the drill's whole deadline). PostgreSQL takes a libpq cancel request
    on a connection of its own (``cancel_safe``); MySQL/MariaDB takes
    ``KILL QUERY <thread id>`` from a second session of the same user, which
    needs no privilege beyond owning both sessions. Errors are swallowed: a
    cancel is best effort, and teardown stops the server anyway.
    """
    try:
        if endpoint.engine == "postgres":
            cast(Any, conn).cancel_safe(timeout=timeout_s)
        elif endpoint.engine == "mysql":
            thread_id = int(cast(Any, conn).thread_id())
            killer = _connect_mysql(endpoint, True, max(1, int(timeout_s)), read_only=False)
            try:
                killer.cursor().execute(f"KILL QUERY {thread_id}")
            finally:
                killer.close()
    except Exception:  # noqa: S110 - best effort by design (see docstring)
        pass
