"""`drill baseline capture` against real servers: the file a runbook's schema check reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def capture(dsn: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", "baseline", "capture", "--dsn", dsn, "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.fixture
def pg_db(pg_server: Any) -> Iterator[Any]:
    ep = pg_server.new_database("cap")
    yield ep
    pg_server.drop_database(ep.database)


@pytest.fixture
def maria_db(mariadb_server: Any) -> Iterator[Any]:
    """A database of its own, dropped afterwards: other tests capture every database on the server."""
    ep = mariadb_server.new_database("cap")
    yield ep
    mariadb_server.drop_database(ep.database)


def test_capture_from_postgres_with_the_password_from_the_environment(
    pg_server: Any, pg_db: Any, tmp_path: Path
) -> None:
    ep = pg_db
    pg_server.run(
        "create table orders (id bigint primary key, created_at timestamptz not null)",
        "insert into orders select g, now() from generate_series(1, 42) g",
        database=ep.database,
    )
    dsn = f"postgresql://{ep.user}@:{ep.port}/{ep.database}?host={ep.host}"
    res = capture(dsn, tmp_path / "b.json", {"PGPASSWORD": pg_server.password})
    assert res.returncode == 0, res.stderr
    baseline = json.loads((tmp_path / "b.json").read_text())
    assert baseline["engine"] == "postgres"
    assert 42 in baseline["row_counts"].values()
    assert any("orders" in t for t in json.dumps(baseline["schema"]).split('"'))
    assert pg_server.password not in res.stdout + res.stderr


def test_wrong_password_is_a_clear_error_without_the_password(pg_server: Any, tmp_path: Path) -> None:
    ep = pg_server.endpoint
    dsn = f"postgresql://{ep.user}:not-the-password@:{ep.port}/{ep.database}?host={ep.host}"
    res = capture(dsn, tmp_path / "b.json", {})
    assert res.returncode != 0
    assert "cannot connect" in res.stderr
    assert "not-the-password" not in res.stderr
    assert not (tmp_path / "b.json").exists()


def test_capture_from_mariadb(mariadb_server: Any, maria_db: Any, tmp_path: Path) -> None:
    ep = maria_db
    mariadb_server.run(
        "create table t (id int primary key)", "insert into t values (1), (2), (3)", database=ep.database
    )
    dsn = f"mysql://{ep.user}@localhost/{ep.database}?unix_socket={ep.unix_socket}"
    res = capture(dsn, tmp_path / "m.json", {"MYSQL_PWD": mariadb_server.password})
    if res.returncode != 0:
        pytest.fail(res.stderr)
    baseline = json.loads((tmp_path / "m.json").read_text())
    assert baseline["engine"] == "mysql" and 3 in baseline["row_counts"].values()
