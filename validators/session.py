"""Prove, from the server, that the validators' session cannot write.

Runbook SQL runs on the restored copy of production. The drill gives the
validators a role made for that (:mod:`validators.roles`) and opens READ ONLY
sessions (:func:`validators.connect.connect`); this module reads back what the
server says about the session before any runbook query runs, and turns it
into a finding the evidence carries: which role the checks ran as, that it is
no superuser, which roles or privileges it holds, and that its transactions
are READ ONLY. If any of that does not hold, the finding fails and the runner
does not run the runbook's own SQL at all: a backend that handed out the wrong
credentials gets a failed drill, never a smoke query run as a superuser.

The reading is per engine (PostgreSQL roles and memberships, MySQL grants);
the judgement is pure (:func:`judge_postgres`, :func:`judge_mysql`).
"""

from __future__ import annotations

from typing import Any

from validators.base import Finding
from validators.dbapi import Connection, fetch_all, fetch_one
from validators.dialects import Dialect

__all__ = [
    "CHECK",
    "MYSQL_READ_PRIVILEGES",
    "PG_READ_ROLES",
    "VALIDATOR",
    "check_session",
    "judge_mysql",
    "judge_postgres",
]

VALIDATOR = "session"
CHECK = "validators' role is read-only"
EXPECTED = "no superuser, read privileges only, every transaction READ ONLY"

#: built-in roles that grant reading only; membership in anything else fails the check
PG_READ_ROLES = frozenset(
    {"pg_read_all_data", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables", "pg_monitor", "rds_iam"}
)

#: MySQL/MariaDB privileges that only read (USAGE is "no privilege")
MYSQL_READ_PRIVILEGES = frozenset({"SELECT", "SHOW VIEW", "SHOW DATABASES", "USAGE"})

_PG_SESSION = """
select current_user::text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls,
       current_setting('transaction_read_only'),
       array(select b.rolname::text from pg_roles b
             where b.oid <> r.oid and pg_has_role(r.oid, b.oid, 'MEMBER') order by 1),
       (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
           and n.nspname !~ '^pg_toast' and has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
from pg_roles r where r.rolname = current_user
"""

# Who the server authenticated us as, and the privileges granted to exactly that account.
_MYSQL_GRANTEE = (
    "concat('''', substring_index(current_user(), '@', 1), '''@''', substring_index(current_user(), '@', -1), '''')"
)
_MYSQL_PRIVILEGES = f"""
select distinct privilege_type from (
  select privilege_type from information_schema.user_privileges where grantee = {_MYSQL_GRANTEE}
  union all select privilege_type from information_schema.schema_privileges where grantee = {_MYSQL_GRANTEE}
  union all select privilege_type from information_schema.table_privileges where grantee = {_MYSQL_GRANTEE}
  union all select privilege_type from information_schema.column_privileges where grantee = {_MYSQL_GRANTEE}
) p order by 1
"""
# MySQL 8 and MariaDB 11.1+ name it transaction_read_only; MariaDB 10.x and MySQL 5.7 tx_read_only.
_MYSQL_READ_ONLY = ("select @@session.transaction_read_only", "select @@session.tx_read_only")


def judge_postgres(facts: dict[str, Any]) -> list[str]:
    """What makes a PostgreSQL session able to write (empty: it cannot)."""
    problems = [
        f"the role has {attr.upper()}"
        for attr in ("superuser", "createrole", "createdb", "replication")
        if facts.get(attr) is not False
    ]
    extra = sorted(set(facts.get("member_of") or ()) - PG_READ_ROLES)
    if extra:
        problems.append("member of " + ", ".join(extra))
    if facts.get("transaction_read_only") != "on":
        problems.append(f"transaction_read_only is {facts.get('transaction_read_only')!r}, not 'on'")
    return problems


def judge_mysql(facts: dict[str, Any]) -> list[str]:
    """What makes a MySQL/MariaDB session able to write (empty: it cannot)."""
    problems = []
    extra = sorted(set(facts.get("privileges") or ()) - MYSQL_READ_PRIVILEGES)
    if extra:
        problems.append("holds " + ", ".join(extra))
    if not facts.get("privileges"):
        problems.append("no privilege could be read for the account")
    if facts.get("active_role") not in (None, "NONE"):
        problems.append(f"role {facts['active_role']!r} is active (its privileges are not checked)")
    if facts.get("transaction_read_only") != 1:
        problems.append(f"transaction read only is {facts.get('transaction_read_only')!r}, not 1")
    return problems


def _read_postgres(conn: Connection) -> dict[str, Any]:
    row = fetch_one(conn, _PG_SESSION)
    if row is None:
        raise RuntimeError("current_user has no row in pg_roles")
    role, sup, createrole, createdb, repl, bypass, read_only, member_of, writable = row
    return {
        "role": role,
        "superuser": sup,
        "createrole": createrole,
        "createdb": createdb,
        "replication": repl,
        "bypass_rls": bypass,
        "member_of": list(member_of or []),
        "transaction_read_only": read_only,
        # a PUBLIC grant in the restored database can make tables writable; READ ONLY transactions still refuse
        "tables_with_write_grants": int(writable or 0),
    }


def _read_mysql(conn: Connection) -> dict[str, Any]:
    try:
        row = fetch_one(conn, "select current_user(), current_role()")
    except Exception:  # MySQL 5.7 has no roles, hence no current_role()
        row = fetch_one(conn, "select current_user(), null")
    account, active_role = (row[0], row[1]) if row else (None, None)
    privileges = [str(r[0]) for r in fetch_all(conn, _MYSQL_PRIVILEGES)]
    read_only: Any = None
    for sql in _MYSQL_READ_ONLY:
        try:
            got = fetch_one(conn, sql)
        except Exception:  # noqa: S112 - the other server flavour's variable name is tried next
            continue
        read_only = int(got[0]) if got and got[0] is not None else None
        break
    return {
        "role": account,
        "privileges": privileges,
        "active_role": active_role,
        "transaction_read_only": read_only,
    }


def check_session(conn: Connection, dialect: Dialect) -> Finding:
    """One finding: the role the checks run as and whether it can write (read from the server)."""
    if dialect.engine == "postgres":
        facts = _read_postgres(conn)
        problems = judge_postgres(facts)
        holds = ", ".join(facts["member_of"]) or "no role"
    else:
        facts = _read_mysql(conn)
        problems = judge_mysql(facts)
        holds = ", ".join(facts["privileges"]) or "no privilege"
    if problems:
        detail = f"runs as {facts['role']}, which can write: " + "; ".join(problems)
        return Finding(VALIDATOR, CHECK, False, expected=EXPECTED, actual=facts, detail=detail)
    detail = f"runs as {facts['role']}: not a superuser, holds {holds}, every transaction READ ONLY"
    return Finding(VALIDATOR, CHECK, True, expected=EXPECTED, actual=facts, detail=detail)
