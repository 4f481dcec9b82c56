"""Fixtures for drills against real local PostgreSQL servers.

``demo_source`` plays production once per session (source cluster with WAL
archiving, base backup, timestamped activity, a target between two commits)
through the same code as ``drill demo``; each test copies what it changes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane import PgPlane, pg_plane
from servers import PgServer

from drills.demo.postgres import DemoSource, build_demo_source
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.errors import PreflightError
from drills.osutil import free_port


@pytest.fixture(autouse=True)
def drill_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "drill-home"
    monkeypatch.setenv("RESTORE_DRILLS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def pg_binaries() -> None:
    try:
        find_pg_binaries()
    except PreflightError as exc:
        pytest.skip(f"{exc}")


@pytest.fixture(scope="session")
def demo_source(pg_binaries: None) -> Iterator[DemoSource]:
    root = Path(tempfile.mkdtemp(prefix="rd-demo-"))
    root.chmod(0o755)
    demo = build_demo_source(root / "demo")
    yield demo
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_dump(demo_source: DemoSource) -> Path:
    """A pg_dump -Fc of the demo source as it ended (all activity included)."""
    wd = demo_source.workdir
    bins = find_pg_binaries()
    src = PgCluster(
        bins,
        wd / "source" / "data",
        wd / "source" / "sock",
        free_port(),
        run_as_for_server(),
        wd / "source" / "server.log",
    )
    src.start(wait=True, options={"listen_addresses": "''", "archive_mode": "off"})
    try:
        out = wd / "backups" / "shop.pgc"
        subprocess.run(
            [
                bins.tool("pg_dump"),
                "-Fc",
                "-h",
                str(src.socket_dir),
                "-p",
                str(src.port),
                "-U",
                "postgres",
                "-f",
                str(out),
                "shop",
            ],
            check=True,
        )
    finally:
        src.stop()
    return out


@pytest.fixture
def plane(pg_server: PgServer) -> Iterator[PgPlane]:
    """The data behind an AWS drill's restored endpoint: a fresh database on the real local PostgreSQL."""
    with pg_plane(pg_server) as p:
        yield p
