"""The real drill path with a hostile runbook: ``run_drill`` on PostgreSQL and MariaDB dump restores.

The runbook's smoke queries write, run a program, write files, change server
settings and signal the server's processes. The drill restores, creates the
validators' read-only role, runs everything, tears down and signs evidence:
each hostile query is a failed finding saying why, the row counts that ran
after them (``parallelism: 1``, counts are queued last) still see every row,
no file appeared, and the evidence names the role the checks ran as and
records, as read back from the server, that it could not write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import MariaDbServer, PgServer, load_shop

from drills.api import RunOptions, default_key_path, run_drill
from drills.backends.base import StepContext
from drills.engines.mariadb.server import find_maria_binaries
from drills.engines.postgres.backend import LocalPostgres
from drills.engines.postgres.server import find_pg_binaries
from drills.engines.postgres.steps import PgRestored
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.runbook import load_runbook
from validators.endpoint import Endpoint, Secret
from validators.sqlerrors import PRIVILEGE, SERVER_SETTING, WRITE

PG_HOSTILE = {
    "writing CTE": ("with d as (delete from orders returning 1) select count(*) from d", WRITE),
    "copy to program": ("copy (select 1) to program 'touch {out}/copy-program'", PRIVILEGE),
    "create table": ("create table stolen (id int)", WRITE),
    "drop table": ("drop table orders", WRITE),
    "lo_export": ("select lo_export(1, '{out}/lo-export')", PRIVILEGE),
    "terminate the server's other processes": (
        "select count(pg_terminate_backend(pid)) from pg_stat_activity where pid <> pg_backend_pid()",
        PRIVILEGE,
    ),
    "set_config archive_command": ("select set_config('archive_command', 'touch {out}/a', false)", SERVER_SETTING),
    "alter system": ("alter system set archive_command = 'touch {out}/a'", PRIVILEGE),
}

MARIA_HOSTILE = {
    "delete": ("delete from orders", PRIVILEGE),
    "into outfile": ("select * from orders into outfile '{out}/outfile'", PRIVILEGE),
    "into dumpfile": ("select 'x' into dumpfile '{out}/dumpfile'", PRIVILEGE),
    "create table": ("create table stolen (id int)", WRITE),
    "drop table": ("drop table orders", WRITE),
    "general log on": ("set global general_log = 1", PRIVILEGE),
}


@pytest.fixture
def outdir() -> Iterator[Path]:
    """Where the corpus tries to write: a directory the restored server's account could write into."""
    d = Path(tempfile.mkdtemp(prefix="rv-drill-out-"))
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _runbook(
    folder: Path, source: dict[str, Any], hostile: dict[str, tuple[str, str]], out: Path, extra: list[dict[str, Any]]
) -> Path:
    smoke = [{"name": name, "sql": sql.format(out=out), "expect": 1} for name, (sql, _) in hostile.items()]
    doc = {
        "name": "hostile-smoke",
        "source": source,
        "objectives": {"rto_seconds": 120},
        "validators": {
            "smoke": [
                *smoke,
                *extra,
                {"name": "orders are there", "sql": "select count(*) from orders", "expect": 200},
            ],
            "row_counts": {"orders": {"equals": 200}, "customers": {"equals": 50}},
            "parallelism": 1,
        },
        "evidence": {"dir": str(folder / "evidence")},
    }
    path = folder / "runbook.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _drill_and_check(runbook: Path, hostile: dict[str, tuple[str, str]], out: Path) -> dict[str, Any]:
    res = run_drill(load_runbook(runbook))
    assert (res.verdict, res.exit_code, res.error) == ("failed", 1, None), res.error
    by = {f["check"]: f for f in res.findings}
    failed = {f["check"] for f in res.findings if not f["passed"]}
    assert failed == set(hostile) | ({"read a server file"} & set(by)), [by[c] for c in failed - set(hostile)]
    for name, (_, why) in hostile.items():
        assert by[name]["detail"].startswith(why + ": "), (name, by[name]["detail"])
    assert by["orders are there"]["passed"] and by["orders rows"]["passed"] and by["customers rows"]["passed"]
    assert list(out.iterdir()) == []
    assert all(r.deleted for r in res.drill.teardown_results)

    assert res.evidence is not None
    statement = read_and_verify(res.evidence, load_verifiers(default_key_path().with_suffix(".pub")))
    p: dict[str, Any] = statement["predicate"]
    session = next(f for f in p["validation"]["findings"] if f["validator"] == "session")
    assert session["passed"] is True and session["check"] == "validators' role is read-only"
    assert session["actual"]["role"].split("@")[0] == p["endpoint"]["user"]
    recorded = {f["check"]: f["detail"] for f in p["validation"]["findings"]}
    assert all(recorded[name].startswith(why) for name, (_, why) in hostile.items())
    return p


@pytest.fixture(scope="module")
def shop_pgc(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pg_dump -Fc of the test shop (customers 50, orders 200)."""
    ep = load_shop(pg_server)
    archive = tmp_path_factory.mktemp("pgc") / "shop.pgc"
    try:
        where = ["-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", ep.database]
        subprocess.run(
            [find_pg_binaries().tool("pg_dump"), "-Fc", *where, "-f", str(archive)],
            env={**os.environ, "PGPASSWORD": pg_server.password},
            check=True,
        )
    finally:
        pg_server.drop_database(ep.database)
    return archive


def test_postgres_drill_with_hostile_smoke_queries(shop_pgc: Path, tmp_path: Path, outdir: Path) -> None:
    source = {"kind": "postgres-dump", "archive": str(shop_pgc), "database": "shop"}
    p = _drill_and_check(_runbook(tmp_path, source, PG_HOSTILE, outdir, []), PG_HOSTILE, outdir)
    assert p["endpoint"]["user"].startswith("drill_reader_")
    session = next(f for f in p["validation"]["findings"] if f["validator"] == "session")["actual"]
    assert session["superuser"] is False and session["member_of"] == ["pg_read_all_data"]
    assert session["transaction_read_only"] == "on"


class _AdminWithPassword(LocalPostgres):
    """Hands out the superuser with a password, as AWS hands out the master user."""

    SECRET = "Adm1n-pass-the-evidence-must-refuse"

    def endpoint(self, ready: PgRestored, ctx: StepContext) -> Endpoint:
        return replace(super().endpoint(ready, ctx), password=Secret(self.SECRET))


def test_the_admin_password_is_still_a_secret_the_evidence_refuses(shop_pgc: Path, tmp_path: Path) -> None:
    """The validators hold the reader's password; the admin's must stay on the evidence writer's list."""
    source = {"kind": "postgres-dump", "archive": str(shop_pgc), "database": "shop"}
    echo = {"name": "echo", "sql": f"select '{_AdminWithPassword.SECRET}'", "expect": "x"}
    runbook = _runbook(tmp_path, source, {}, tmp_path, [echo])
    res = run_drill(load_runbook(runbook), RunOptions(backend_factory=_AdminWithPassword))
    assert res.drill.endpoint is not None and res.drill.endpoint.user.startswith("drill_reader_")
    assert res.evidence is None and res.exit_code == 3
    assert "appears in the evidence" in (res.error or "") and _AdminWithPassword.SECRET not in (res.error or "")


def test_mariadb_drill_with_hostile_smoke_queries(mariadb_server: MariaDbServer, tmp_path: Path, outdir: Path) -> None:
    ep = load_shop(mariadb_server)
    try:
        dump = tmp_path / "shop.sql"
        with dump.open("wb") as fh:
            tool = find_maria_binaries(need=("dump",)).tool("dump")
            login = [f"--socket={ep.unix_socket}", "--user=drill", f"--password={mariadb_server.password}"]
            subprocess.run(
                [tool, "--no-defaults", *login, "--single-transaction", "--routines", "--databases", ep.database],
                stdout=fh,
                check=True,
            )
    finally:
        mariadb_server.drop_database(ep.database)
    source = {"kind": "mariadb-dump", "dump": str(dump)}
    load_file = {"name": "read a server file", "sql": "select load_file('/etc/hostname')", "op": "!=", "expect": None}
    p = _drill_and_check(_runbook(tmp_path, source, MARIA_HOSTILE, outdir, [load_file]), MARIA_HOSTILE, outdir)
    read = next(f for f in p["validation"]["findings"] if f["check"] == "read a server file")
    assert read["passed"] is False and "without the FILE privilege" in read["detail"]
    session = next(f for f in p["validation"]["findings"] if f["validator"] == "session")["actual"]
    assert session["privileges"] == ["SELECT", "SHOW DATABASES", "SHOW VIEW"] and session["transaction_read_only"] == 1
