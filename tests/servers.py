"""Throwaway database servers for tests and benchmarks: real PostgreSQL and MariaDB.

Both servers listen only on a Unix socket inside a private temporary
directory (no TCP port, nothing reachable from outside), run as the
``postgres`` / ``mysql`` account when the tests run as root, and require a
password for the application user ``drill`` (no trust or skipped grant
tables on the path the validators take), so tests can check that the
password never leaks into findings.

Use through the session fixtures ``pg_server`` / ``mariadb_server`` in
``tests/conftest.py``::

    def test_x(pg_server):
        ep = pg_server.new_database("orders")          # a fresh database, Endpoint with password
        pg_server.run("create table t (id int)", database=ep.database)
        rows = pg_server.sql("select count(*) from t", database=ep.database)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.errors import PreflightError
from drills.osutil import RunAs, chown_tree, free_port, unprivileged_user
from validators.connect import connect
from validators.endpoint import Endpoint, Secret

__all__ = ["MARIADB_HINT", "MariaDbServer", "MissingServer", "PgServer", "start_mariadb", "start_postgres"]

MARIADB_HINT = "install mariadb-server"
PG_HINT = "install postgresql"
MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
APP_USER = "drill"


class MissingServer(Exception):
    """The server binaries are not installed: tests skip with this message."""


@dataclass
class _Server:
    """What both servers offer: an endpoint (password auth) and a way to run SQL."""

    endpoint: Endpoint  # the application user `drill`, with a password, default database
    password: str
    root: Path
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def at(self, database: str | None) -> Endpoint:
        return self.endpoint if database is None else replace(self.endpoint, database=database)

    def sql(self, statement: str, params: Any = None, *, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as ``drill`` and return its rows (empty for DDL/DML)."""
        conn: Any = connect(self.at(database))
        try:
            cur = conn.cursor()
            cur.execute(statement, params) if params is not None else cur.execute(statement)
            rows = cur.fetchall() if cur.description else []
            return [tuple(r) for r in rows]
        finally:
            conn.close()

    def run(self, *statements: str, database: str | None = None) -> None:
        """Run several statements in order on one connection."""
        conn: Any = connect(self.at(database))
        try:
            cur = conn.cursor()
            for s in statements:
                cur.execute(s)
        finally:
            conn.close()

    def new_database(self, prefix: str = "t") -> Endpoint:
        """A fresh, empty database; the returned endpoint connects to it as ``drill``."""
        name = f"{prefix}_{next(self._names)}_{secrets.token_hex(3)}"
        self.run(f"create database {name}")
        return self.at(name)

    def drop_database(self, name: str) -> None:
        self.run(f"drop database if exists {name}")


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class PgServer(_Server):
    cluster: PgCluster | None = None

    @property
    def admin(self) -> Endpoint:
        """The ``postgres`` superuser (trust, socket only): for what ``drill`` may not do."""
        return replace(self.endpoint, user="postgres", password=None)

    def stop(self) -> bool:
        return self.cluster.stop() if self.cluster else True


_PG_HBA = """# written by tests/servers.py: the superuser by trust for setup, everyone else by password
local all postgres trust
local all all scram-sha-256
"""


def start_postgres(root: Path, *, settings: dict[str, str] | None = None) -> PgServer:
    """initdb + start a PostgreSQL server under ``root/pg``; reuses an existing data dir."""
    try:
        bins = find_pg_binaries()
    except PreflightError as exc:
        raise MissingServer(f"{PG_HINT}: {exc}") from None
    run_as = run_as_for_server()
    base = root / "pg"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    password_file = base / "password"
    cluster = PgCluster(bins, base / "data", base / "sock", free_port(), run_as, base / "server.log")
    fresh = not (cluster.datadir / "PG_VERSION").exists()
    if fresh:
        cluster.initdb()
        (cluster.datadir / "pg_hba.conf").write_text(_PG_HBA)
        password_file.write_text(secrets.token_urlsafe(18))
        password_file.chmod(0o600)
    options = {"listen_addresses": "''", "fsync": "off", "max_connections": "60", **(settings or {})}
    cluster.start(wait=True, options=options)
    password = password_file.read_text().strip()
    endpoint = Endpoint("postgres", str(cluster.socket_dir), cluster.port, "postgres", APP_USER, Secret(password))
    server = PgServer(endpoint=endpoint, password=password, root=base, cluster=cluster)
    if fresh:
        from psycopg import sql

        conn: Any = connect(server.admin)
        try:
            stmt = sql.SQL("create role {} login superuser password {}").format(
                sql.Identifier(APP_USER), sql.Literal(password)
            )
            conn.execute(stmt)
        finally:
            conn.close()
    return server


# ---------------------------------------------------------------- MariaDB


@dataclass
class MariaDbServer(_Server):
    process: subprocess.Popen[bytes] | None = None
    logfile: Path | None = None

    def stop(self, timeout: float = 30) -> bool:
        p = self.process
        if p is None or p.poll() is not None:
            return True
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        return p.poll() is not None

    def log_tail(self, n: int = 15) -> str:
        try:
            return " | ".join((self.logfile or Path("/nonexistent")).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _mysql_user() -> RunAs | None:
    """The account mariadbd runs as when we are root (it drops privileges itself)."""
    try:
        return unprivileged_user("mysql", "nobody")
    except PreflightError as exc:
        raise MissingServer(str(exc)) from None


def start_mariadb(root: Path, *, extra_args: Sequence[str] = (), timeout: float = 90) -> MariaDbServer:
    """mariadb-install-db + mariadbd under ``root/maria``; reuses an existing data dir."""
    if not (os.access(MARIADBD, os.X_OK) and os.access(INSTALL_DB, os.X_OK)):
        raise MissingServer(f"{MARIADB_HINT}: {MARIADBD} / {INSTALL_DB} not found")
    run_as = _mysql_user()
    user_args = [f"--user={run_as.name}"] if run_as else []
    base = root / "maria"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    datadir, sock, log = base / "data", base / "mysqld.sock", base / "server.log"
    password_file = base / "password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(18))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    # Runs at every start: the password user exists without ever skipping grant tables.
    init = base / "init.sql"
    init.write_text(
        f"CREATE OR REPLACE USER '{APP_USER}'@'localhost' IDENTIFIED BY '{password}';\n"
        f"GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'localhost' WITH GRANT OPTION;\n"
    )
    if not (datadir / "mysql").exists():
        shutil.rmtree(datadir, ignore_errors=True)
        datadir.mkdir()
        chown_tree(datadir, run_as)
        proc = subprocess.run(
            [INSTALL_DB, "--no-defaults", f"--datadir={datadir}", *user_args, "--skip-test-db"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {(proc.stderr or proc.stdout)[-800:]}")
    log.touch()
    if run_as is not None:
        for p in (base, log, init):
            os.chown(p, run_as.uid, run_as.gid)
    init.chmod(0o600)
    args = [
        MARIADBD,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--socket={sock}",
        f"--pid-file={base / 'mysqld.pid'}",
        f"--log-error={log}",
        f"--init-file={init}",
        f"--tmpdir={base}",
        "--skip-networking",
        "--skip-log-bin",
        "--innodb-flush-log-at-trx-commit=2",
        "--character-set-server=utf8mb4",
        "--max-connections=60",
        *user_args,
        *extra_args,
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = Endpoint("mysql", "localhost", 0, "mysql", APP_USER, Secret(password), unix_socket=str(sock))
    server = MariaDbServer(endpoint=endpoint, password=password, root=base, process=process, logfile=log)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {process.returncode}: {server.log_tail()}")
        if sock.exists():
            try:
                server.sql("select 1")
                return server
            except Exception as exc:
                last = str(exc)
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"mariadbd did not accept connections within {timeout:.0f}s: {last}; {server.log_tail()}")


def stop_quietly(server: _Server | None) -> None:
    with contextlib.suppress(Exception):
        if isinstance(server, PgServer | MariaDbServer):
            server.stop()


# ---------------------------------------------------------------- a small sample schema

SHOP = {
    "postgres": [
        "create table customers (id bigserial primary key, email text not null unique,"
        " created_at timestamptz not null default now())",
        "create table orders (id bigserial primary key, customer_id bigint not null references customers(id),"
        " total numeric(10,2) not null, note text, updated_at timestamptz not null)",
        "create index orders_customer_idx on orders (customer_id)",
        "create index orders_total_idx on orders (total)",
        "create view big_orders as select id, customer_id from orders where customer_id < 10",
        "create function order_count() returns bigint language sql as 'select count(*) from orders'",
        "insert into customers (email) select 'c' || g || '@example.com' from generate_series(1, 50) g",
        "insert into orders (customer_id, total, updated_at) select 1 + g % 50, g,"
        " timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' from generate_series(1, 200) g",
    ],
    "mysql": [
        "create table customers (id bigint auto_increment primary key, email varchar(200) not null unique,"
        " created_at timestamp not null default current_timestamp) engine=InnoDB",
        "create table orders (id bigint auto_increment primary key, customer_id bigint not null,"
        " total decimal(10,2) not null, note text, updated_at datetime not null,"
        " key orders_customer_idx (customer_id), key orders_total_idx (total),"
        " constraint orders_customer_fk foreign key (customer_id) references customers (id)) engine=InnoDB",
        "create view big_orders as select id, customer_id from orders where customer_id < 10",
        "create trigger orders_note before insert on orders for each row set new.note = coalesce(new.note, '')",
        "create function order_count() returns bigint reads sql data return (select count(*) from orders)",
        "insert into customers (email) select concat('c', seq, '@example.com') from seq_1_to_50",
        "insert into orders (customer_id, total, updated_at) select 1 + seq % 50, seq,"
        " timestamp '2024-01-01 00:00:00' + interval seq minute from seq_1_to_200",
    ],
}
"""A shop with customers (50 rows) and orders (200 rows, updated_at 2024-01-01 00:01..03:20 UTC)."""


def load_shop(server: _Server, prefix: str = "shop") -> Endpoint:
    """A fresh database holding :data:`SHOP`; its endpoint."""
    ep = server.new_database(prefix)
    server.run(*SHOP[ep.engine], database=ep.database)
    return ep


Shop = tuple[PgServer | MariaDbServer, Endpoint]  # the `shop` fixture: (server, its admin endpoint)
ShopReader = tuple[PgServer | MariaDbServer, Endpoint, Endpoint]  # `shop_reader`: (server, admin, read-only role)
