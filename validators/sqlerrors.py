"""What a failed query tried to do, in words an auditor reads at a glance.

The validators run as a read-only role (:mod:`validators.roles`) in READ ONLY
transactions, so a runbook query that writes, runs a program, touches a file
or changes the server fails on the server. The driver's message for that
("cannot execute SELECT in a read-only transaction", "command denied to user")
is precise but easy to misread as a broken query; :func:`explain` names the
cause from the error's code (SQLSTATE on PostgreSQL, the error number on
MySQL/MariaDB), never from its text, so a translated server message cannot
change the answer.
"""

from __future__ import annotations

import re

__all__ = ["MULTIPLE_STATEMENTS", "OWN_SESSION", "PRIVILEGE", "SERVER_SETTING", "WRITE", "explain", "sqlstate_or_errno"]

WRITE = "the query tried to write, and the validators' session is read-only"
PRIVILEGE = "the query needed a privilege that the validators' read-only role does not have"
SERVER_SETTING = "the query tried to change a server setting, which the validators' role may not do"
OWN_SESSION = "the query ended its own session"
MULTIPLE_STATEMENTS = "a smoke query must be a single statement"

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_PG: dict[str, str] = {
    "25006": WRITE,  # read_only_sql_transaction
    "42501": PRIVILEGE,  # insufficient_privilege
    "2F003": PRIVILEGE,  # prohibited_sql_statement_attempted: dblink/postgres_fdw refusing a passwordless login
    "2F004": PRIVILEGE,  # reading_sql_data_not_permitted
    "2F002": WRITE,  # modifying_sql_data_not_permitted
    "38002": WRITE,  # modifying_sql_data_not_permitted (external routine)
    "55P02": SERVER_SETTING,  # cant_change_runtime_param
    "57P01": OWN_SESSION,  # admin_shutdown: pg_terminate_backend(pg_backend_pid())
}

# MySQL / MariaDB error numbers (mysqld_error.h)
_MYSQL: dict[int, str] = {
    1792: WRITE,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1290: WRITE,  # ER_OPTION_PREVENTS_STATEMENT: --read-only, --secure-file-priv
    1044: PRIVILEGE,  # ER_DBACCESS_DENIED_ERROR
    1045: PRIVILEGE,  # ER_ACCESS_DENIED_ERROR: FILE privilege on MySQL 5.x (a query error here, not a login)
    1095: PRIVILEGE,  # ER_KILL_DENIED_ERROR
    1142: PRIVILEGE,  # ER_TABLEACCESS_DENIED_ERROR: "DELETE command denied to user"
    1143: PRIVILEGE,  # ER_COLUMNACCESS_DENIED_ERROR
    1227: PRIVILEGE,  # ER_SPECIFIC_ACCESS_DENIED_ERROR: FILE, SUPER, READ_ONLY ADMIN ...
    1370: PRIVILEGE,  # ER_PROCACCESS_DENIED_ERROR: EXECUTE on a routine
}

_MULTI = re.compile(r"multiple commands into a prepared statement")


def sqlstate_or_errno(exc: BaseException) -> str | int | None:
    """pymysql's error number (its first argument), else psycopg's ``sqlstate``.

    The number comes first: pymysql also carries a SQLSTATE, but MySQL's are
    coarse (``42000`` is both "access denied" and a syntax error).
    """
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def explain(exc: BaseException) -> str | None:
    """Why a validator query failed, when the cause is the validators' read-only role; else None."""
    code = sqlstate_or_errno(exc)
    if isinstance(code, str):
        if code == "42601" and _MULTI.search(str(exc)):
            return MULTIPLE_STATEMENTS
        return _PG.get(code)
    if isinstance(code, int):
        return _MYSQL.get(code)
    return None
