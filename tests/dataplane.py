"""The data plane of AWS drill tests: a real local database behind the endpoint moto reports.

A moto endpoint (``<id>.xxxx.us-east-1.rds.amazonaws.com``) resolves nowhere. The
runbook reaches the "restored" database the way production reaches a private RDS
endpoint from outside the VPC: ``connect: {host: 127.0.0.1, port: N}`` (the override
:meth:`Endpoint.routed_to` applies), with a loopback port forwarded to a real local
server (:class:`Tunnel`, what an SSM port-forwarding session is). The local server is
faithful about credentials: :meth:`PgPlane.watch` makes its master user take exactly
the ``MasterUserPassword`` the backend sends to RDS, only when RDS accepted the call.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from servers import MariaDbServer, PgServer

from validators.connect import connect
from validators.endpoint import Endpoint

# ---------------------------------------------------------------- the tunnel


class Tunnel:
    """A loopback TCP port forwarded to a server's Unix socket, like an SSM port-forwarding session."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.connections = 0
        self._closing = threading.Event()
        self._socks: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"tunnel-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            self.connections += 1
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


def execute(ep: Endpoint, statements: list[str], params: dict[str, Any] | None = None) -> None:
    conn: Any = connect(ep)
    try:
        cur = conn.cursor()
        for stmt in statements:
            cur.execute(stmt, params) if params is not None and "%(" in stmt else cur.execute(stmt)
    finally:
        conn.close()


def set_master_password(server: PgServer | MariaDbServer, user: str, password: str, *, create: bool = False) -> None:
    """What RDS does with ``MasterUserPassword``, done on the local server (as its admin user ``drill``)."""
    conn: Any = connect(server.endpoint)
    try:
        if isinstance(server, PgServer):
            from psycopg import sql

            verb = "create role {} login superuser password {}" if create else "alter role {} password {}"
            conn.execute(sql.SQL(verb).format(sql.Identifier(user), sql.Literal(password)))
        else:
            cur = conn.cursor()
            verb = "create user" if create else "alter user"
            cur.execute(f"{verb} %s@'localhost' identified by %s", (user, password))
            if create:
                cur.execute("grant all privileges on *.* to %s@'localhost' with grant option", (user,))  # as RDS
    finally:
        conn.close()


def drop_master(server: PgServer | MariaDbServer, user: str) -> None:
    """Drop the master and every validators' role the drills created on the shared server."""
    conn: Any = connect(server.endpoint)
    try:
        if isinstance(server, PgServer):
            from psycopg import sql

            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(user)))
            for (reader,) in conn.execute("select rolname from pg_roles where rolname like 'drill\\_reader\\_%'"):
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(reader)))
        else:
            cur = conn.cursor()
            cur.execute("drop user if exists %s@'localhost'", (user,))
            cur.execute("select user, host from mysql.user where user like 'drill\\_reader\\_%'")
            for reader, host in cur.fetchall():
                cur.execute("drop user %s@%s", (reader, host))
    finally:
        conn.close()


ROWS = 3  # the "snapshot's" orders


@dataclass
class PgPlane:
    """A fresh database with ``orders`` (ROWS rows) on the session PostgreSQL, its master user, a tunnel."""

    server: PgServer
    database: str
    master: str
    prod_password: str
    tunnel: Tunnel
    applied: list[str] = field(default_factory=list)  # every password the backend set, in order

    def watch(self, events: Any) -> None:
        """Make the local master user take the password the backend sends to RDS, when RDS accepts it.

        ``events``: a boto3 Session's or a client's ``meta.events`` (a client copies its session's handlers
        when it is made, so a backend's existing client is watched on its own); registered once per emitter.
        """

        def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            if "MasterUserPassword" in params:
                context["plane_master_password"] = params["MasterUserPassword"]

        def apply(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            password = context.pop("plane_master_password", None)
            if password and "Error" not in parsed:
                set_master_password(self.server, self.master, password)
                self.applied.append(password)

        for op in ("ModifyDBInstance", "ModifyDBCluster"):
            events.register(f"before-parameter-build.rds.{op}", remember, unique_id=f"plane-remember-{op}")
            events.register(f"after-call.rds.{op}", apply, unique_id=f"plane-apply-{op}")

    def runbook_fields(self) -> dict[str, Any]:
        """What a runbook needs to reach and check this database."""
        return {
            "connect": {"host": "127.0.0.1", "port": self.tunnel.port},
            "validators": {"row_counts": {"orders": {"equals": ROWS}}},
        }


@contextlib.contextmanager
def pg_plane(server: PgServer, master: str = "app_admin") -> Iterator[PgPlane]:
    """The data behind every restored endpoint of one test; dropped with its roles afterwards."""
    ep = server.new_database("orders")
    prod_password = secrets.token_urlsafe(18)
    set_master_password(server, master, prod_password, create=True)
    tunnel: Tunnel | None = None
    try:
        execute(
            ep,
            [
                "create table orders (id bigint primary key, total numeric(10,2) not null)",
                f"insert into orders select g, g * 1.5 from generate_series(1, {ROWS}) g",
            ],
        )
        tunnel = Tunnel(f"{ep.host}/.s.PGSQL.{ep.port}")
        yield PgPlane(server, ep.database, master, prod_password, tunnel)
    finally:
        if tunnel is not None:
            tunnel.close()
        server.drop_database(ep.database)
        drop_master(server, master)
