"""Runbook SQL cannot write: a corpus of hostile smoke queries against real servers.

The validators run as the read-only role :func:`validators.roles.create_reader`
makes. Every hostile query fails as a finding whose detail says why (it tried
to write, needed a privilege, tried to change a server setting, was more than
one statement), and afterwards the data, the server's settings, the other
sessions and the file system are as they were. A control does the same thing
as the admin, to show each check could have failed: the server's account can
write into the directory the corpus aims at.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from readers import reader_for
from servers import MariaDbServer, PgServer, load_shop

from drills.errors import InfrastructureError
from drills.reader import ReaderProvisioner
from validators.config import ValidatorsConfig
from validators.connect import connect
from validators.errors import ValidatorError
from validators.runner import run_validators
from validators.sqlerrors import MULTIPLE_STATEMENTS, PRIVILEGE, SERVER_SETTING, WRITE

READ_WRITE = "set session characteristics as transaction read write"
WHY = {"write": WRITE, "privilege": PRIVILEGE, "setting": SERVER_SETTING, "statements": MULTIPLE_STATEMENTS}

PG_CORPUS: list[tuple[str, str, tuple[str, ...]]] = [
    ("writing CTE", "with d as (delete from orders returning 1) select count(*) from d", ("write",)),
    ("updating CTE", "with u as (update customers set email = 'x' returning 1) select count(*) from u", ("write",)),
    ("copy to program", "copy (select 1) to program 'touch {out}/copy-program'", ("privilege",)),
    ("copy to file", "copy orders to '{out}/copy-file'", ("privilege",)),
    ("create table", "create table stolen (id int)", ("write",)),
    ("drop table", "drop table orders", ("write",)),
    ("lo_export", "select lo_export(1, '{out}/lo-export')", ("privilege",)),
    ("lo_import", "select lo_import('/etc/hostname')", ("privilege",)),
    ("terminate the admin's session", "select pg_terminate_backend({admin_pid})", ("privilege",)),
    ("set_config archive_command", "select set_config('archive_command', 'touch {out}/archived', false)", ("setting",)),
    ("set_config log_statement", "select set_config('log_statement', 'none', false)", ("privilege",)),
    ("alter system", "alter system set archive_command = 'touch {out}/archived'", ("privilege",)),
    ("pg_read_file", "select pg_read_file('/etc/hostname')", ("privilege",)),
    ("nextval", "select nextval('orders_id_seq')", ("privilege", "write")),
    (
        "several statements",
        f"commit; {READ_WRITE}; delete from orders; select 1",
        ("statements",),
    ),
    (
        "dblink to the superuser over the trusted socket",
        "select dblink_exec('host={sock} port={port} dbname={db} user=postgres', 'delete from orders')",
        ("privilege",),
    ),
]

MARIA_CORPUS: list[tuple[str, str, tuple[str, ...]]] = [
    ("delete", "delete from orders", ("privilege", "write")),
    ("update", "update customers set email = 'x'", ("privilege", "write")),
    ("into outfile", "select * from orders into outfile '{out}/outfile'", ("privilege",)),
    ("into dumpfile", "select 'x' into dumpfile '{out}/dumpfile'", ("privilege",)),
    ("create table", "create table stolen (id int)", ("write", "privilege")),
    ("drop table", "drop table orders", ("write", "privilege")),
    ("create trigger", "create trigger t2 before insert on orders for each row set new.note = 'x'", ("write",)),
    ("read write for one statement", "set statement tx_read_only=0 for delete from orders", ("privilege",)),
    ("kill the admin's connection", "kill {admin_id}", ("privilege",)),
    ("turn on the general log", "set global general_log = 1", ("privilege",)),
    ("stored function (EXECUTE is not granted)", "select order_count()", ("privilege",)),
]


@pytest.fixture
def outdir(servers_root: Path) -> Iterator[Path]:
    """A directory the server accounts may write into (sticky, world-writable), empty."""
    d = Path(tempfile.mkdtemp(prefix="rv-out-", dir=servers_root))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pg_shop(pg_server: PgServer) -> Iterator[tuple[PgServer, Any]]:
    ep = load_shop(pg_server)
    yield pg_server, ep
    pg_server.drop_database(ep.database)


def _held(ep: Any) -> Any:
    """An admin session kept open while the corpus runs: nothing may end it."""
    return connect(ep)


def _scalar(conn: Any, sql: str) -> Any:
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    return row[0] if row else None


def _smoke(corpus: list[tuple[str, str, tuple[str, ...]]], *extra: dict[str, Any], **fmt: Any) -> ValidatorsConfig:
    smoke = [{"name": name, "sql": sql.format(**fmt), "expect": 1} for name, sql, _ in corpus]
    return ValidatorsConfig.model_validate(
        {
            "smoke": [*smoke, *extra],
            "row_counts": {"orders": {"equals": 200}, "customers": {"equals": 50}},
            "parallelism": 4,
        }
    )


def _assert_refused(findings: dict[str, Any], corpus: list[tuple[str, str, tuple[str, ...]]]) -> None:
    for name, _, reasons in corpus:
        f = findings[name]
        assert not f.passed, (name, f)
        assert any(f.detail.startswith(WHY[r] + ": ") for r in reasons), (name, f.detail)


def test_postgres_corpus_fails_with_reasons_and_changes_nothing(pg_server: PgServer, outdir: Path) -> None:
    ep = load_shop(pg_server)
    try:
        pg_server.run("create extension if not exists dblink", database=ep.database)
        admin = _held(ep)
        with reader_for(pg_server, ep) as (reader, facts), contextlib.closing(admin):
            assert facts["grants"] == "pg_read_all_data" and facts["password"] is True
            pid = _scalar(admin, "select pg_backend_pid()")
            cfg = _smoke(PG_CORPUS, out=outdir, admin_pid=pid, sock=ep.host, port=ep.port, db=ep.database)
            report = run_validators(reader, cfg)
            by = {f.check: f for f in report.findings}

            session = by["validators' role is read-only"]
            assert session.passed and session.actual["role"] == reader.user
            assert session.actual["superuser"] is False and session.actual["member_of"] == ["pg_read_all_data"]
            assert session.actual["transaction_read_only"] == "on"
            _assert_refused(by, PG_CORPUS)
            # the counts ran as the same role, after or alongside the corpus: nothing was deleted
            assert by["orders rows"].passed and by["customers rows"].passed

            # nothing changed: data, schema, settings, sessions, files
            assert _scalar(admin, "select count(*) from orders") == 200
            assert _scalar(admin, "select count(*) from customers where email = 'x'") == 0
            assert _scalar(admin, "select to_regclass('stolen') is null") is True
            assert _scalar(admin, "show archive_command") in ("", "(disabled)")
            assert _scalar(admin, "select count(*) from pg_file_settings where name = 'archive_command'") == 0
            assert _scalar(admin, "select 1") == 1  # the admin's session was not terminated
            assert list(outdir.iterdir()) == []
            # control: the server's account can write there, so the empty directory means something
            admin.execute(f"copy (select 1) to program 'touch {outdir}/control'")
            assert [p.name for p in outdir.iterdir()] == ["control"]
    finally:
        pg_server.drop_database(ep.database)


def test_mariadb_corpus_fails_with_reasons_and_changes_nothing(mariadb_server: MariaDbServer, outdir: Path) -> None:
    ep = load_shop(mariadb_server)
    try:
        admin = _held(ep)
        with reader_for(mariadb_server, ep) as (reader, _), contextlib.closing(admin):
            conn_id = _scalar(admin, "select connection_id()")
            load_file = {
                "name": "read a server file",
                "sql": "select load_file('/etc/hostname')",
                "op": "!=",
                "expect": None,
            }
            several = {"name": "several statements", "sql": "select 1; delete from orders", "expect": 1}
            cfg = _smoke(MARIA_CORPUS, load_file, several, out=outdir, admin_id=conn_id)
            report = run_validators(reader, cfg)
            by = {f.check: f for f in report.findings}

            session = by["validators' role is read-only"]
            assert session.passed and session.actual["role"] == f"{reader.user}@localhost"
            assert session.actual["privileges"] == ["SELECT", "SHOW VIEW"]
            assert session.actual["transaction_read_only"] == 1
            _assert_refused(by, MARIA_CORPUS)
            load = by["read a server file"]
            assert not load.passed and load.actual is None and "without the FILE privilege" in load.detail
            assert not by["several statements"].passed  # pymysql sends one statement; the server refuses a second
            assert by["orders rows"].passed and by["customers rows"].passed

            assert _scalar(admin, "select count(*) from orders") == 200
            assert _scalar(admin, "select count(*) from customers where email = 'x'") == 0
            db = f"'{ep.database}'"
            tables = (
                f"select group_concat(table_name order by 1) from information_schema.tables where table_schema={db}"
            )
            assert _scalar(admin, tables) == "big_orders,customers,orders"
            triggers = f"select group_concat(trigger_name) from information_schema.triggers where trigger_schema={db}"
            assert _scalar(admin, triggers) == "orders_note"
            assert _scalar(admin, "select @@global.general_log") == 0
            assert _scalar(admin, "select 1") == 1  # the admin's connection was not killed
            assert list(outdir.iterdir()) == []
            _scalar(admin, f"select 1 into outfile '{outdir}/control'")  # control: the server can write there
            assert [p.name for p in outdir.iterdir()] == ["control"]
    finally:
        mariadb_server.drop_database(ep.database)


def test_a_session_that_can_write_runs_no_runbook_sql(shop: tuple[Any, Any]) -> None:
    """A backend that hands out writing credentials without saying so gets a failed drill, not a write."""
    server, ep = shop  # the superuser `drill`, not marked admin
    delete = "with d as (delete from orders returning 1) select count(*) from d"
    cfg = ValidatorsConfig.model_validate(
        {
            "smoke": [
                {"name": "delete", "sql": delete if ep.engine == "postgres" else "delete from orders", "expect": 1}
            ],
            "row_counts": {"orders": {"equals": 200}},
        }
    )
    report = run_validators(ep, cfg)
    session, counts, smoke = report.findings
    assert not session.passed and session.actual["role"].split("@")[0] == "drill"
    assert ("SUPERUSER" if ep.engine == "postgres" else "DELETE") in session.detail
    assert not smoke.passed and smoke.detail.startswith("not run: runs as drill")
    assert counts.passed  # our own count ran, read-only
    assert server.sql("select count(*) from orders", database=ep.database) == [(200,)]
    assert not report.passed


def test_admin_credentials_are_refused_outright(shop: tuple[Any, Any]) -> None:
    _, ep = shop
    with pytest.raises(ValidatorError, match="refusing to run checks as drill"):
        run_validators(replace(ep, admin=True), ValidatorsConfig())


def test_a_writing_grant_added_to_the_reader_fails_the_session(shop: tuple[Any, Any]) -> None:
    server, ep = shop
    with reader_for(server, ep) as (reader, _):
        if ep.engine == "postgres":
            server.run(f'grant pg_write_all_data to "{reader.user}"', database=ep.database)
            why = "member of pg_write_all_data"
        else:
            server.sql(f"grant delete on `{ep.database}`.* to %s@'localhost'", (reader.user,))
            why = "holds DELETE"
        cfg = ValidatorsConfig.model_validate({"smoke": [{"name": "x", "sql": "select 1", "expect": 1}]})
        session, smoke = run_validators(reader, cfg).findings
        assert not session.passed and why in session.detail
        assert not smoke.passed and smoke.detail.startswith("not run:")


def test_postgres_public_write_grants_are_recorded_and_still_refused(pg_shop: tuple[PgServer, Any]) -> None:
    """A production that granted DELETE to PUBLIC: the role can write those tables, READ ONLY transactions still refuse.

    The first query turns the session default off; the next ones must not inherit that session, and a
    string of statements must not get past it either.
    """
    server, ep = pg_shop
    server.run("grant delete on orders to public", database=ep.database)
    with reader_for(server, ep) as (reader, _):
        cfg = ValidatorsConfig.model_validate(
            {
                "smoke": [
                    {
                        "name": "session default off",
                        "sql": "select set_config('default_transaction_read_only', 'off', false)",
                        "expect": "off",
                    },
                    {
                        "name": "delete",
                        "sql": "with d as (delete from orders returning 1) select count(*) from d",
                        "expect": 0,
                    },
                    {"name": "delete again", "sql": "delete from orders returning 1", "expect": 0},
                    {
                        "name": "statements",
                        "sql": "commit; " + READ_WRITE + "; delete from orders; select 1",
                        "expect": 1,
                    },
                ],
                "parallelism": 1,  # in order, on as few connections as the runner allows
            }
        )
        session, off, delete, again, statements = run_validators(reader, cfg).findings
        assert session.passed and session.actual["tables_with_write_grants"] == 1
        assert off.passed  # allowed: it only changes this query's own session
        assert delete.detail.startswith(WRITE) and again.detail.startswith(WRITE)
        assert statements.detail.startswith(MULTIPLE_STATEMENTS)
    assert server.sql("select count(*) from orders", database=ep.database) == [(200,)]


def test_postgres_without_pg_read_all_data_reads_everything_through_grants(pg_shop: tuple[PgServer, Any]) -> None:
    """The path servers before 14 take: USAGE and SELECT on every schema, same answers."""
    server, ep = pg_shop
    server.run(
        "create schema app", "create table app.t (id int)", "insert into app.t values (1), (2)", database=ep.database
    )
    with reader_for(server, ep, pg_read_all_data=False) as (reader, facts):
        assert facts["grants"] == "USAGE and SELECT on 2 schemas"
        cfg = ValidatorsConfig.model_validate({"row_counts": {"orders": {"equals": 200}, "app.t": {"equals": 2}}})
        session, *counts = run_validators(reader, cfg).findings
        assert session.passed and session.actual["member_of"] == []
        assert all(c.passed for c in counts), counts


def test_an_admin_that_cannot_create_roles_fails_clearly(shop: tuple[Any, Any]) -> None:
    server, ep = shop
    weak, password = "weak_" + ep.database[-6:], "Weak-pass-1"
    if ep.engine == "postgres":
        server.run(f"create role {weak} login password '{password}'")
    else:
        server.sql("create user %s@'localhost' identified by %s", (weak, password))
        server.sql(f"grant select on `{ep.database}`.* to %s@'localhost'", (weak,))
    try:
        from validators.endpoint import Secret

        admin = replace(ep, user=weak, password=Secret(password), admin=True)
        with pytest.raises(InfrastructureError) as exc:
            ReaderProvisioner()(admin)
        message = str(exc.value)
        assert "cannot create the validators' read-only role drill_reader_" in message and f"as {weak}" in message
        assert "refused the credentials" not in message and password not in message
    finally:
        if ep.engine == "postgres":
            server.run(f"drop role {weak}")
        else:
            server.sql("drop user %s@'localhost'", (weak,))


def test_the_readers_password_never_reaches_the_server_log(pg_server: PgServer) -> None:
    """PostgreSQL logs statements; the role is created with a SCRAM verifier, never the clear text."""
    ep = pg_server.new_database("pwlog")
    log = pg_server.root / "server.log"
    pg_server.run("alter role drill set log_statement = 'all'")
    try:
        before = log.stat().st_size
        with reader_for(pg_server, ep) as (reader, _):
            assert reader.password is not None
            secret = reader.password.reveal()
            connect(reader, read_only=True).close()  # the password works
        written = log.read_bytes()[before:].decode(errors="replace")
        assert "create role" in written.lower() and "scram-sha-256$" in written.lower()  # the statement was logged
        assert secret not in written
    finally:
        pg_server.run("alter role drill reset log_statement")
        pg_server.drop_database(ep.database)
