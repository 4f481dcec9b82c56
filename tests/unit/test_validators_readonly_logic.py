"""Pure parts of the read-only validators: naming a refused query's cause, judging a session's facts.

The same paths against real servers are in tests/functional/test_validators_readonly.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pymysql
import pytest

from validators.session import judge_mysql, judge_postgres
from validators.sqlerrors import MULTIPLE_STATEMENTS, OWN_SESSION, PRIVILEGE, SERVER_SETTING, WRITE, explain


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (psycopg.errors.ReadOnlySqlTransaction("cannot execute DELETE in a read-only transaction"), WRITE),
        (psycopg.errors.InsufficientPrivilege("permission denied for function lo_export"), PRIVILEGE),
        (psycopg.errors.CantChangeRuntimeParam('parameter "archive_command" cannot be changed now'), SERVER_SETTING),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), OWN_SESSION),
        (psycopg.errors.SyntaxError("cannot insert multiple commands into a prepared statement"), MULTIPLE_STATEMENTS),
        (psycopg.errors.SyntaxError('syntax error at or near "selec"'), None),
        (psycopg.errors.UndefinedTable('relation "nowhere" does not exist'), None),
        (pymysql.err.OperationalError(1792, "Cannot execute statement in a READ ONLY transaction"), WRITE),
        (pymysql.err.OperationalError(1142, "DELETE command denied to user 'r'@'localhost'"), PRIVILEGE),
        (pymysql.err.OperationalError(1227, "you need (at least one of) the FILE privilege(s)"), PRIVILEGE),
        (pymysql.err.InternalError(1095, "You are not owner of thread 7"), PRIVILEGE),
        (pymysql.err.ProgrammingError(1064, "You have an error in your SQL syntax"), None),
        (pymysql.err.ProgrammingError(1146, "Table 'shop.nowhere' doesn't exist"), None),
        (ZeroDivisionError("division by zero"), None),
    ],
)
def test_explain_names_the_cause_from_the_code_not_the_text(error: BaseException, why: str | None) -> None:
    assert explain(error) == why


def test_explain_ignores_a_message_that_merely_mentions_a_cause() -> None:
    # a translated or crafted message must not change the answer: only the code counts
    assert explain(psycopg.errors.UndefinedTable("permission denied; read-only transaction")) is None
    assert explain(pymysql.err.ProgrammingError(1146, "command denied to user")) is None


READER_PG: dict[str, Any] = {
    "role": "drill_reader_0a1b2c3d",
    "superuser": False,
    "createrole": False,
    "createdb": False,
    "replication": False,
    "bypass_rls": True,
    "member_of": ["pg_read_all_data"],
    "transaction_read_only": "on",
    "tables_with_write_grants": 3,  # PUBLIC grants: recorded, refused by READ ONLY transactions
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"member_of": []}, None),  # explicit grants, before PostgreSQL 14
        ({"member_of": ["pg_read_all_data", "rds_iam"]}, None),
        ({"superuser": True}, "the role has SUPERUSER"),
        ({"createrole": True}, "the role has CREATEROLE"),
        ({"createdb": None}, "the role has CREATEDB"),  # unknown is not "no"
        ({"replication": True}, "the role has REPLICATION"),
        ({"member_of": ["pg_read_all_data", "pg_write_all_data"]}, "member of pg_write_all_data"),
        ({"member_of": ["rds_superuser"]}, "member of rds_superuser"),
        ({"member_of": ["pg_database_owner"]}, "member of pg_database_owner"),
        ({"member_of": ["pg_execute_server_program"]}, "member of pg_execute_server_program"),
        ({"transaction_read_only": "off"}, "transaction_read_only is 'off', not 'on'"),
        ({"transaction_read_only": None}, "transaction_read_only is None, not 'on'"),
    ],
)
def test_judge_postgres(change: dict[str, Any], problem: str | None) -> None:
    problems = judge_postgres({**READER_PG, **change})
    assert problems == ([] if problem is None else [problem])


READER_MYSQL: dict[str, Any] = {
    "role": "drill_reader_0a1b2c3d@%",
    "privileges": ["SELECT", "SHOW VIEW"],
    "active_role": None,
    "transaction_read_only": 1,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"privileges": ["SELECT", "SHOW DATABASES", "SHOW VIEW", "USAGE"]}, None),
        ({"active_role": "NONE"}, None),  # MySQL 8's answer when no role is active
        ({"privileges": ["DELETE", "SELECT"]}, "holds DELETE"),
        ({"privileges": ["FILE", "SELECT", "TRIGGER"]}, "holds FILE, TRIGGER"),
        ({"privileges": []}, "no privilege could be read for the account"),
        ({"active_role": "app_writer"}, "role 'app_writer' is active (its privileges are not checked)"),
        ({"transaction_read_only": 0}, "transaction read only is 0, not 1"),
    ],
)
def test_judge_mysql(change: dict[str, Any], problem: str | None) -> None:
    problems = judge_mysql({**READER_MYSQL, **change})
    assert problems == ([] if problem is None else [problem])
