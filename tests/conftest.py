"""Session fixtures shared by every test suite: throwaway PostgreSQL and MariaDB servers.

``pg_server`` / ``mariadb_server`` yield a :class:`servers.PgServer` /
:class:`servers.MariaDbServer`: ``.endpoint`` (an :class:`Endpoint` for the
password-authenticated user ``drill``), ``.password``, ``.sql(stmt,
database=...)``, ``.run(*stmts, database=...)`` and ``.new_database(prefix)``
(a fresh database per test, so tests sharing the session server do not see
each other's tables). Servers start on first use, once per session, and are
always stopped at the end; tests skip when the server binaries are missing.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `servers` importable however pytest roots the tests

from servers import MariaDbServer, MissingServer, PgServer, load_shop, start_mariadb, start_postgres

from validators.endpoint import Endpoint


@pytest.fixture(scope="session")
def servers_root() -> Iterator[Path]:
    """A private temp dir the server accounts can traverse (0755); removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="rd-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(servers_root: Path) -> Iterator[PgServer]:
    try:
        server = start_postgres(servers_root)
    except MissingServer as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server(servers_root: Path) -> Iterator[MariaDbServer]:
    try:
        server = start_mariadb(servers_root)
    except MissingServer as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["postgres", "mariadb"])
def db_server(request: pytest.FixtureRequest) -> PgServer | MariaDbServer:
    """Each test using this runs once per engine."""
    name = "pg_server" if request.param == "postgres" else "mariadb_server"
    server: PgServer | MariaDbServer = request.getfixturevalue(name)
    return server


@pytest.fixture
def shop(db_server: PgServer | MariaDbServer) -> Iterator[tuple[PgServer | MariaDbServer, Endpoint]]:
    """A fresh database with the sample shop (customers 50, orders 200) on each engine; dropped after."""
    ep = load_shop(db_server)
    yield db_server, ep
    db_server.drop_database(ep.database)


@pytest.fixture
def shop_reader(
    shop: tuple[PgServer | MariaDbServer, Endpoint],
) -> Iterator[tuple[PgServer | MariaDbServer, Endpoint, Endpoint]]:
    """The shop plus the validators' read-only role on it: ``(server, admin endpoint, reader endpoint)``."""
    from readers import reader_for

    server, ep = shop
    with reader_for(server, ep) as (reader, _):
        yield server, ep, reader
