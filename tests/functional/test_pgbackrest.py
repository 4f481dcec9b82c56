"""Drills of a real pgBackRest repository (``kind: pgbackrest``).

The fixture plays production once per module: a throwaway PostgreSQL cluster whose
``archive_command`` is ``pgbackrest archive-push`` into a posix repository, a full backup,
committed activity, an incremental backup, more activity spread over several WAL segments
(one ``pg_switch_wal`` per batch), every commit's timestamp read back from the server. The
tests then drill that repository as a user would and assert what an operator reads: the
verdict, the exit code, exact row counts, the set chosen, and that the repository did not
change by one byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from repo_checks import evidence, no_server_left, repo_digest, wait_archived

from drills.api import run_drill
from drills.clock import iso
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.errors import PreflightError
from drills.osutil import free_port, private_dir
from drills.runbook import load_runbook

pytestmark = pytest.mark.postgres

STANZA = "shop"
BATCHES = 4  # after the incremental backup: BATCHES x ROWS rows, one WAL segment per batch
ROWS = 5
BEFORE_INCR = 6  # rows committed between the full and the incremental backup


@dataclass(frozen=True)
class Repo:
    root: Path
    repo: Path
    config: Path
    stamps: list[datetime]  # commit time of every row, in order (row n has n = index + 1)
    full_stop: datetime  # after the full backup ended, before any row
    incr_label: str
    full_label: str


def _pgbackrest(conf: Path, user: Any, *args: str) -> str:
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    proc = subprocess.run(
        ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        **kwargs,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out: str = proc.stdout
    return out


@pytest.fixture(scope="module")
def pgbr() -> Iterator[Repo]:
    import psycopg

    if shutil.which("pgbackrest") is None:
        pytest.skip("pgbackrest is not installed (scripts/setup.sh installs it)")
    try:
        bins = find_pg_binaries(15)
    except PreflightError as exc:
        pytest.skip(f"{exc}")
    run_as = run_as_for_server()
    root = Path(tempfile.mkdtemp(prefix="rd-pgbr-"))
    root.chmod(0o755)
    repo = private_dir(root / "repo", run_as)
    work = private_dir(root / "work", run_as)
    src_root = root / "source"
    src_root.mkdir()
    src_root.chmod(0o755)
    src = PgCluster(bins, src_root / "data", src_root / "sock", free_port(), run_as, src_root / "server.log")
    conf = root / "pgbackrest.conf"
    conf.write_text(
        f"[global]\nrepo1-path={repo}\nrepo1-retention-full=9\nlock-path={work}/lock\nlog-path={work}/log\n"
        f"log-level-file=off\nlog-level-console=warn\nstart-fast=y\n\n"
        f"[{STANZA}]\npg1-path={src.datadir}\npg1-socket-path={src.socket_dir}\npg1-port={src.port}\n"
    )
    conf.chmod(0o644)
    src.initdb()
    push = f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'"
    opts = {"listen_addresses": "''", "wal_level": "replica", "archive_mode": "on", "archive_command": push}
    src.start(wait=True, options={**opts, "fsync": "off"})
    stamps: list[datetime] = []
    try:
        with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("create database shop")
        with psycopg.connect(src.conninfo("shop"), autocommit=True) as conn:
            conn.execute("create table orders (id int primary key, created_at timestamptz not null)")
            _pgbackrest(conf, run_as, "stanza-create")
            _pgbackrest(conf, run_as, "--type=full", "backup")

            def commit(n: int) -> None:
                row = conn.execute("insert into orders values (%s, clock_timestamp()) returning created_at", (n,))
                stamps.append(row.fetchone()[0])  # type: ignore[index]
                time.sleep(0.03)

            time.sleep(1.1)  # pgBackRest's set timestamps are whole seconds
            full_stop = datetime.now().astimezone()
            for _ in range(BEFORE_INCR):
                commit(len(stamps) + 1)
            time.sleep(1.1)
            _pgbackrest(conf, run_as, "--type=incr", "backup")
            time.sleep(1.1)
            for _ in range(BATCHES):
                for _ in range(ROWS):
                    commit(len(stamps) + 1)
                wait_archived(conn)
        info = _pgbackrest(conf, None, "info", "--output=json")
    finally:
        src.stop()
    import json

    sets = json.loads(info)[0]["backup"]
    assert [s["type"] for s in sets] == ["full", "incr"]
    yield Repo(root, repo, conf, stamps, full_stop, sets[1]["label"], sets[0]["label"])
    shutil.rmtree(root, ignore_errors=True)


def between(r: Repo, n: int) -> datetime:
    """A target between row n's commit and row n+1's."""
    return r.stamps[n - 1] + (r.stamps[n] - r.stamps[n - 1]) / 2


def runbook(tmp: Path, r: Repo, target: str, rows: int | None, **source: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)
    where = "\n".join(f"  {k}: {v}" for k, v in source.items()) or f"  config: {r.config}"
    checks = f"  row_counts: {{orders: {{equals: {rows}}}}}\n" if rows is not None else ""
    (tmp / "rb.yaml").write_text(
        f"name: shop-pgbackrest\nsource:\n  kind: pgbackrest\n  stanza: {STANZA}\n{where}\n"
        f"  target_time: {target}\n  database: shop\n"
        "objectives: {rto_seconds: 600, rpo_seconds: 86400}\n"
        f"validators:\n{checks}  smoke:\n"
        "    - {name: rows, sql: 'select count(*) from orders', expect: " + str(rows if rows is not None else 0) + "}\n"
        "  freshness: {column: orders.created_at}\n"
        "evidence: {dir: evidence}\n"
    )
    return tmp / "rb.yaml"


def test_time_target_after_the_incremental_restores_exactly_the_rows_before_it(pgbr: Repo, tmp_path: Path) -> None:
    n = BEFORE_INCR + 2 * ROWS + 2  # inside the third batch after the incremental backup
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, iso(between(pgbr, n)), n)))
    assert res.verdict == "passed" and res.exit_code == 0, res.to_json()["reasons"]
    ev = evidence(res)
    rp = ev["recovery_point"]
    assert rp["tool"]["name"] == "pgBackRest" and rp["tool"]["version"].startswith("pgBackRest 2.")
    assert rp["backup_set"]["label"] == pgbr.incr_label and rp["backup_set"]["type"] == "incr"
    assert rp["backup_set"]["size_bytes"] > 0 and rp["backup_set"]["repository_size_bytes"] > 0
    assert rp["stanza"] == STANZA and rp["repository"]["config"] == str(pgbr.config)
    assert rp["wal_archive"]["range_fetched"].startswith(rp["backup_set"]["wal_start"])
    # a row's created_at is read inside its transaction: its commit follows within the same sleep interval
    last, after = rp["wal_archive"]["expected_last_commit"]["at"], rp["wal_archive"]["first_commit_after_target"]["at"]
    assert (
        iso(pgbr.stamps[n - 1]) <= last < iso(between(pgbr, n)) < iso(pgbr.stamps[n]) <= after < iso(pgbr.stamps[n + 1])
    )
    assert ev["recovery"]["complete"] is True, ev["recovery"]
    assert any(c["check"] == "archive_mode_off" and c["value"] == "off" and c["passed"] for c in ev["isolation_checks"])
    assert ev["teardown"]["all_deleted"] is True
    assert no_server_left(res.run_id)


def test_target_between_full_and_incremental_uses_the_full_set(pgbr: Repo, tmp_path: Path) -> None:
    n = 3
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, iso(between(pgbr, n)), n)))
    assert res.verdict == "passed" and res.exit_code == 0, res.to_json()["reasons"]
    rp = evidence(res)["recovery_point"]
    assert rp["backup_set"]["label"] == pgbr.full_label and rp["backup_set"]["type"] == "full"


def test_latest_restores_every_committed_row_from_an_inline_repository(pgbr: Repo, tmp_path: Path) -> None:
    total = len(pgbr.stamps)
    assert total == BEFORE_INCR + BATCHES * ROWS
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, "latest", total, repo_path=str(pgbr.repo))))
    assert res.verdict == "passed" and res.exit_code == 0, res.to_json()["reasons"]
    ev = evidence(res)
    assert ev["recovery_point"]["backup_set"]["label"] == pgbr.incr_label
    assert ev["recovery_point"]["repository"]["repo_path"] == str(pgbr.repo)
    assert ev["recovery"]["newest_replayed_transaction_at"] >= iso(pgbr.stamps[-1])
    assert ev["recovery"]["complete"] is True


def test_target_before_every_backup_set_fails_with_a_clear_message(pgbr: Repo, tmp_path: Path) -> None:
    early = pgbr.stamps[0] - timedelta(hours=1)
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, iso(early), 0)))
    assert res.verdict == "failed" and res.exit_code == 1 and res.failed_state == "preflight", res.to_json()
    assert "outside the restorable range" in (res.error or "") and "oldest backup set" in (res.error or "")


def test_target_after_the_last_archived_commit_fails(pgbr: Repo, tmp_path: Path) -> None:
    late = pgbr.stamps[-1] + timedelta(hours=1)
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, iso(late), len(pgbr.stamps))))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert "is not before any archived commit" in (res.error or ""), res.error


def _copy_without_segment(r: Repo, dest: Path, nth_after_incr: int) -> tuple[Path, str]:
    """A copy of the repository with one archived WAL segment deleted (the nth after the incremental's start)."""
    shutil.copytree(r.repo, dest, symlinks=True)
    archived = sorted((dest / "archive" / STANZA).glob("*/*/0000*-*"))
    segs = sorted(p for p in archived if len(p.name.split("-")[0]) == 24)
    incr_start = next(i for i, p in enumerate(segs) if p.name.split("-")[0] >= _incr_wal_start(r))
    victim = segs[incr_start + nth_after_incr]
    victim.unlink()
    return dest, victim.name.split("-")[0]


def _incr_wal_start(r: Repo) -> str:
    import json

    info = json.loads(_pgbackrest(r.config, None, "info", "--output=json"))
    return str(next(s for s in info[0]["backup"] if s["label"] == r.incr_label)["archive"]["start"])


def test_a_wal_segment_missing_before_the_target_fails_naming_it(pgbr: Repo, tmp_path: Path) -> None:
    copy, gone = _copy_without_segment(pgbr, tmp_path / "repo", 2)
    n = len(pgbr.stamps) - 2  # in the last batch: the gap lies between the set and the target
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, iso(between(pgbr, n)), n, repo_path=str(copy))))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert gone in (res.error or ""), res.error
    ev = evidence(res)
    assert gone in ev["recovery_point"]["wal_archive"]["fetch"]["missing_from_repository"]


def test_a_wal_segment_missing_fails_latest(pgbr: Repo, tmp_path: Path) -> None:
    copy, gone = _copy_without_segment(pgbr, tmp_path / "repo", 3)
    res = run_drill(load_runbook(runbook(tmp_path / "d", pgbr, "latest", len(pgbr.stamps), repo_path=str(copy))))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert gone in (res.error or ""), res.error


def test_the_repository_is_byte_identical_after_drills(pgbr: Repo, tmp_path: Path) -> None:
    before = repo_digest(pgbr.repo)
    assert len([k for k in before if "/pg_data/" in k]) > 100  # the whole repository, not an empty folder
    n = BEFORE_INCR + ROWS + 1
    rb = runbook(tmp_path / "d", pgbr, iso(between(pgbr, n)), n)
    text = rb.read_text().replace(f"  stanza: {STANZA}\n", f"  stanza: {STANZA}\n  verify: true\n")
    rb.write_text(text)
    res = run_drill(load_runbook(rb))
    assert res.verdict == "passed", (res.error, res.to_json()["reasons"])
    assert evidence(res)["recovery_point"]["repository_verify"]["result"] == "ok"
    res2 = run_drill(load_runbook(runbook(tmp_path / "l", pgbr, "latest", len(pgbr.stamps))))
    assert res2.verdict == "passed", res2.to_json()
    assert repo_digest(pgbr.repo) == before


def test_drill_validate_checks_the_repository_without_a_server(pgbr: Repo, tmp_path: Path) -> None:
    from drills.backends import check_backup
    from drills.errors import BackupDefect

    n = BEFORE_INCR + 1
    facts = check_backup(load_runbook(runbook(tmp_path / "ok", pgbr, iso(between(pgbr, n)), n)).runbook.source)
    assert facts["backup_set"]["label"] == pgbr.incr_label and facts["tool"].startswith("pgBackRest")
    early = iso(pgbr.stamps[0] - timedelta(hours=1))
    with pytest.raises(BackupDefect, match="outside the restorable range"):
        check_backup(load_runbook(runbook(tmp_path / "early", pgbr, early, 0)).runbook.source)


def test_a_damaged_file_in_the_backup_set_fails_the_drill(pgbr: Repo, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(pgbr.repo, copy, symlinks=True)
    victim = max((copy / "backup" / STANZA / pgbr.full_label / "pg_data" / "base").rglob("*.gz"), key=os.path.getsize)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16
    victim.write_bytes(bytes(raw))
    n = 3  # restores the full set; job-retry 0: pgBackRest would retry a damaged file twice, 15 s apart
    rb = runbook(tmp_path / "d", pgbr, iso(between(pgbr, n)), n, repo_path=str(copy), options="{job-retry: '0'}")
    res = run_drill(load_runbook(rb))
    assert res.verdict == "failed" and res.exit_code == 1 and res.failed_state == "restore", res.error
    assert "damaged in the repository" in (res.error or "") and pgbr.full_label in (res.error or ""), res.error
