"""The validators' own login: read access only, created with admin credentials.

Smoke queries are SQL written in a runbook and run against a copy of
production. Run as the superuser (or the RDS master user) in autocommit, a
writing CTE commits, ``COPY ... TO PROGRAM`` runs a shell command as the
server's account, ``lo_export`` writes files. So the drill uses the admin
credentials a backend hands out (:attr:`Endpoint.admin`) for one thing only:
to create a role that can read everything and nothing else, and every check
runs as that role.

PostgreSQL::

    CREATE ROLE drill_reader_<hex> LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT
    ALTER ROLE ... SET default_transaction_read_only = on
    GRANT CONNECT ON DATABASE <db>; GRANT pg_read_all_data (14+)
      or, before 14 (or when the admin may not grant it): USAGE on every schema,
      SELECT on every table and sequence of the database
    ALTER ROLE ... BYPASSRLS when the admin may grant it (row counts must see every row;
      pg_read_all_data does not bypass row-level security)

The password, when there is one, is sent as a SCRAM verifier computed on the
client (``PQencryptPasswordConn``, SCRAM-SHA-256), so the clear text never
appears in a statement the server could log.

MySQL / MariaDB::

    CREATE USER drill_reader_<hex>@'%' and @'localhost'; GRANT SELECT, SHOW VIEW ON *.*

Not granted on purpose: ``TRIGGER`` (it would show triggers in
``information_schema``, but it also lets a single ``SET STATEMENT
tx_read_only=0 FOR CREATE TRIGGER ...`` write, read-only session or not),
``FILE``, ``EXECUTE``, ``PROCESS``.

Creation is idempotent for a given name, so the connect state may retry it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from dataclasses import replace
from typing import Any

from validators.connect import connect, describe_error
from validators.endpoint import Endpoint, Secret
from validators.errors import ValidatorError

__all__ = ["READER_PREFIX", "create_reader", "new_reader_name", "new_reader_password"]

READER_PREFIX = "drill_reader_"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_SYSTEM_SCHEMAS = "nspname not in ('pg_catalog', 'information_schema') and nspname !~ '^pg_(toast|temp_|toast_temp_)'"


def new_reader_name() -> str:
    """A role name no production database uses: ``drill_reader_`` and 8 random hex digits."""
    return READER_PREFIX + secrets.token_hex(4)


def new_reader_password() -> Secret:
    return Secret(secrets.token_urlsafe(24))


def create_reader(
    admin: Endpoint,
    name: str,
    password: Secret | None,
    *,
    timeout_s: int = 10,
    pg_read_all_data: bool = True,
) -> tuple[Endpoint, dict[str, Any]]:
    """Create (or re-assert) the read-only role ``name`` with ``admin``; its endpoint and what was granted.

    ``password`` None: the reader logs in the way the server admits it without
    one (trust over a private socket). ``pg_read_all_data=False`` forces the
    per-schema grants that servers before PostgreSQL 14 get.
    """
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a role name this module creates")
    if admin.engine == "mysql" and password is None:
        raise ValueError("a MySQL/MariaDB reader needs a password: '%' accounts are reachable over the network")
    conn: Any = connect(admin, timeout_s=timeout_s)
    try:
        if admin.engine == "postgres":
            facts = _create_postgres(conn, admin.database, name, password, pg_read_all_data)
        else:
            facts = _create_mysql(conn, name, password)
    except ValidatorError:
        raise
    except Exception as exc:
        raise ValidatorError(
            f"cannot create the validators' read-only role {name} as {admin.user}: {describe_error(exc, admin)}",
            hint="the admin user must be able to create roles and grant read access",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    options = {k: v for k, v in admin.options.items() if k != "auth"}  # an IAM token was the admin's, not ours
    reader = replace(admin, user=name, password=password, admin=False, options=options)
    return reader, {"role": name, "password": password is not None, **facts}


# ---------------------------------------------------------------- PostgreSQL


def _create_postgres(
    conn: Any, database: str, name: str, password: Secret | None, pg_read_all_data: bool
) -> dict[str, Any]:
    import psycopg
    from psycopg import sql

    role = sql.Identifier(name)
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone() is not None
    attrs: sql.Composable = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT")
    if password is not None:
        # The algorithm is named: with None, libpq asks the server (a blocking round trip inside a call that
        # holds the GIL). md5 hba lines accept SCRAM verifiers; every supported server speaks SCRAM.
        verifier = conn.pgconn.encrypt_password(password.reveal().encode(), name.encode(), b"scram-sha-256").decode()
        attrs = sql.SQL("{} PASSWORD {}").format(attrs, sql.Literal(verifier))
    verb = "ALTER" if exists else "CREATE"
    conn.execute(sql.SQL(verb + " ROLE {} {}").format(role, attrs))
    conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role))
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # PUBLIC has CONNECT unless revoked
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role))
    version = int(conn.execute("select current_setting('server_version_num')").fetchone()[0])
    grants = ""
    if pg_read_all_data and version >= 140000:
        try:
            conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(role))
            grants = "pg_read_all_data"
        except psycopg.errors.InsufficientPrivilege:
            grants = ""  # e.g. a managed master without ADMIN on it: grant per schema below
    if not grants:
        schemas = [r[0] for r in conn.execute(f"select nspname from pg_namespace where {_SYSTEM_SCHEMAS}").fetchall()]
        for schema in schemas:
            s = sql.Identifier(schema)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, role))
            conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, role))
        grants = f"USAGE and SELECT on {len(schemas)} schemas"
    try:
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(role))
        bypass = True
    except psycopg.errors.InsufficientPrivilege:
        bypass = False  # row-level security then hides rows from counts: they fail, they do not pass
    return {"grants": grants, "bypass_rls": bypass, "default_transaction_read_only": "on"}


# ---------------------------------------------------------------- MySQL / MariaDB


def _native_hash(password: str) -> str:
    """``mysql_native_password``'s stored form, so MariaDB never sees the clear text in a statement."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()  # noqa: S324 - the format


def _create_mysql(conn: Any, name: str, password: Secret | None) -> dict[str, Any]:
    """Both accounts dropped and created again: a retried connect state ends in the same state."""
    cur = conn.cursor()
    cur.execute("select version()")
    mariadb = "mariadb" in str(cur.fetchone()[0]).lower()
    hosts = ("%", "localhost")  # '%' for a network client (RDS); localhost for a socket
    for host in hosts:
        cur.execute("DROP USER IF EXISTS %s@%s", (name, host))
        assert password is not None  # checked by create_reader
        if mariadb:
            cur.execute("CREATE USER %s@%s IDENTIFIED BY PASSWORD %s", (name, host, _native_hash(password.reveal())))
        else:  # MySQL rewrites the password out of its logs; its default plugin takes no native hash
            cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (name, host, password.reveal()))
        cur.execute("GRANT SELECT, SHOW VIEW ON *.* TO %s@%s", (name, host))
    return {"grants": "SELECT, SHOW VIEW on *.*", "hosts": list(hosts)}
