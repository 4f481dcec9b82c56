"""Drills of a real Barman catalogue (``kind: barman``).

The fixture plays production once per module: a throwaway PostgreSQL 15 cluster (run as
``postgres`` when the tests are root) whose ``archive_command`` copies each segment into the
Barman server's ``incoming`` directory (Barman's ``archiver = on``), and ``backup_method =
postgres`` (pg_basebackup over the private socket): a first backup, committed rows, a second
backup, more rows spread over several WAL segments, every commit's timestamp read back from
the server. ``barman archive-wal`` files the segments as Barman's cron would. The tests drill
that catalogue as a user would and assert the verdict, the exit code, exact row counts, the
backup chosen, and that the repository did not change by one byte.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from repo_checks import evidence, no_server_left, repo_digest, wait_archived

from drills.api import run_drill
from drills.clock import iso
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.errors import PreflightError
from drills.osutil import free_port, private_dir
from drills.runbook import load_runbook

pytestmark = pytest.mark.postgres

SERVER = "shop"
BATCHES = 4  # after the second backup: BATCHES x ROWS rows, one WAL segment per batch
ROWS = 5
BEFORE_SECOND = 6  # rows committed between the two backups


@dataclass(frozen=True)
class Catalogue:
    root: Path
    home: Path  # barman_home: the repository
    config: Path
    stamps: list[datetime]  # commit time of every row, in order (row n has n = index + 1)
    first_id: str
    second_id: str


def barman_conf(path: Path, home: Path, cluster: PgCluster, user: str) -> Path:
    path.write_text(
        f"[barman]\nbarman_user = {user}\nbarman_home = {home}\nlog_file = {path.parent}/barman.log\n"
        "log_level = WARNING\n\n"
        f"[{SERVER}]\ndescription = restore-drills test\n"
        f"conninfo = host={cluster.socket_dir} port={cluster.port} user=postgres dbname=postgres\n"
        f"streaming_conninfo = host={cluster.socket_dir} port={cluster.port} user=postgres\n"
        f"backup_method = postgres\narchiver = on\nstreaming_archiver = off\npath_prefix = {cluster.bin.bindir}\n"
    )
    path.chmod(0o644)
    return path


def _barman(conf: Path, *args: str) -> str:
    proc = subprocess.run(["barman", "-c", str(conf), *args], capture_output=True, text=True, check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def bm() -> Iterator[Catalogue]:
    import psycopg

    if shutil.which("barman") is None:
        pytest.skip("barman is not installed (scripts/setup.sh installs it)")
    try:
        bins = find_pg_binaries(15)
    except PreflightError as exc:
        pytest.skip(f"{exc}")
    run_as = run_as_for_server()
    root = Path(tempfile.mkdtemp(prefix="rd-barman-"))
    root.chmod(0o755)
    home = root / "home"
    incoming = home / SERVER / "incoming"
    incoming.mkdir(parents=True)
    for d in (home, home / SERVER):
        d.chmod(0o755)
    private_dir(incoming, run_as)  # the source server's archive_command writes here
    src_root = root / "source"
    src_root.mkdir()
    src_root.chmod(0o755)
    src = PgCluster(bins, src_root / "data", src_root / "sock", free_port(), run_as, src_root / "server.log")
    conf = barman_conf(root / "barman.conf", home, src, pwd.getpwuid(os.geteuid()).pw_name)
    src.initdb()
    push = f"'test ! -f {incoming}/%f && cp %p {incoming}/%f'"
    opts = {"listen_addresses": "''", "wal_level": "replica", "archive_mode": "on", "archive_command": push}
    src.start(wait=True, options={**opts, "fsync": "off"})
    stamps: list[datetime] = []
    try:
        with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("create database shop")
        with psycopg.connect(src.conninfo("shop"), autocommit=True) as conn:
            conn.execute("create table orders (id int primary key, created_at timestamptz not null)")
            _barman(conf, "switch-wal", "--force", "--archive", SERVER)
            _barman(conf, "backup", "--wait", SERVER)

            def commit(n: int) -> None:
                row = conn.execute("insert into orders values (%s, clock_timestamp()) returning created_at", (n,))
                stamps.append(row.fetchone()[0])  # type: ignore[index]
                time.sleep(0.03)

            time.sleep(1.1)  # list-backups end times are whole seconds
            for _ in range(BEFORE_SECOND):
                commit(len(stamps) + 1)
            time.sleep(1.1)
            _barman(conf, "backup", "--wait", SERVER)
            time.sleep(1.1)
            for _ in range(BATCHES):
                for _ in range(ROWS):
                    commit(len(stamps) + 1)
                wait_archived(conn)
        _barman(conf, "archive-wal", SERVER)
        listed = json.loads(_barman(conf, "-f", "json", "list-backups", SERVER))[SERVER]
    finally:
        src.stop()
    ids = sorted(b["backup_id"] for b in listed if b["status"] == "DONE")
    assert len(ids) == 2, listed
    yield Catalogue(root, home, conf, stamps, ids[0], ids[1])
    shutil.rmtree(root, ignore_errors=True)


def between(c: Catalogue, n: int) -> datetime:
    """A target between row n's commit and row n+1's."""
    return c.stamps[n - 1] + (c.stamps[n] - c.stamps[n - 1]) / 2


def runbook(tmp: Path, c: Catalogue, target: str, rows: int, config: Path | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)
    (tmp / "rb.yaml").write_text(
        f"name: shop-barman\nsource:\n  kind: barman\n  server: {SERVER}\n  config: {config or c.config}\n"
        f"  target_time: {target}\n  database: shop\n"
        "objectives: {rto_seconds: 600, rpo_seconds: 86400}\n"
        f"validators:\n  row_counts: {{orders: {{equals: {rows}}}}}\n  smoke:\n"
        "    - {name: rows, sql: 'select count(*) from orders', expect: " + str(rows) + "}\n"
        "  freshness: {column: orders.created_at}\n"
        "evidence: {dir: evidence}\n"
    )
    return tmp / "rb.yaml"


def test_time_target_after_the_second_backup_restores_exactly_the_rows_before_it(bm: Catalogue, tmp_path: Path) -> None:
    n = BEFORE_SECOND + 2 * ROWS + 2  # inside the third batch after the second backup
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n)))
    assert res.verdict == "passed" and res.exit_code == 0, (res.error, res.to_json()["reasons"])
    ev = evidence(res)
    rp = ev["recovery_point"]
    assert rp["tool"]["name"] == "Barman" and rp["tool"]["version"].startswith("3.")
    assert rp["server"] == SERVER and rp["repository"]["config"] == str(bm.config)
    assert rp["backup"]["backup_id"] == bm.second_id and rp["backup"]["size_bytes"] > 0
    assert rp["backup"]["begin_time"] < rp["backup"]["end_time"] < iso(bm.stamps[BEFORE_SECOND])
    assert rp["wal_archive"]["range_fetched"].startswith(rp["backup"]["begin_wal"] + "..")
    assert rp["backup"]["verification"]["method"].startswith("pg_verifybackup"), rp["backup"]
    fetch = rp["wal_archive"]["fetch"]
    assert fetch["read_directly_from_wals_directory"] >= BATCHES and fetch["missing_from_repository"] == []
    last, after = rp["wal_archive"]["expected_last_commit"]["at"], rp["wal_archive"]["first_commit_after_target"]["at"]
    assert iso(bm.stamps[n - 1]) <= last < iso(between(bm, n)) < iso(bm.stamps[n]) <= after < iso(bm.stamps[n + 1])
    assert ev["recovery"]["complete"] is True, ev["recovery"]
    assert any(c["check"] == "archive_mode_off" and c["value"] == "off" and c["passed"] for c in ev["isolation_checks"])
    assert ev["teardown"]["all_deleted"] is True
    assert no_server_left(res.run_id)


def test_target_between_the_backups_uses_the_first(bm: Catalogue, tmp_path: Path) -> None:
    n = 3
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n)))
    assert res.verdict == "passed" and res.exit_code == 0, (res.error, res.to_json()["reasons"])
    assert evidence(res)["recovery_point"]["backup"]["backup_id"] == bm.first_id


def test_latest_restores_every_committed_row(bm: Catalogue, tmp_path: Path) -> None:
    total = len(bm.stamps)
    assert total == BEFORE_SECOND + BATCHES * ROWS
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, "latest", total)))
    assert res.verdict == "passed" and res.exit_code == 0, (res.error, res.to_json()["reasons"])
    ev = evidence(res)
    assert ev["recovery_point"]["backup"]["backup_id"] == bm.second_id
    assert ev["recovery"]["newest_replayed_transaction_at"] >= iso(bm.stamps[-1])
    assert ev["recovery"]["complete"] is True


def test_target_before_every_backup_fails_with_a_clear_message(bm: Catalogue, tmp_path: Path) -> None:
    early = bm.stamps[0] - timedelta(hours=1)
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(early), 0)))
    assert res.verdict == "failed" and res.exit_code == 1 and res.failed_state == "preflight", res.to_json()
    assert "outside the restorable range" in (res.error or "") and bm.first_id in (res.error or ""), res.error


def test_target_after_the_last_archived_commit_fails(bm: Catalogue, tmp_path: Path) -> None:
    late = bm.stamps[-1] + timedelta(hours=1)
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(late), len(bm.stamps))))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert "is not before any archived commit" in (res.error or ""), res.error


def _copy_without_segment(c: Catalogue, dest: Path, nth_after_second: int) -> tuple[Path, str]:
    """A copy of the catalogue (and a config pointing at it) with one archived WAL segment deleted."""
    home = dest / "home"
    shutil.copytree(c.home, home, symlinks=True)
    show = json.loads(_barman(c.config, "-f", "json", "show-backup", SERVER, c.second_id))[SERVER]
    begin = show["base_backup_information"]["begin_wal"]
    segs = sorted(p for p in (home / SERVER / "wals").glob("*/0*") if len(p.name) == 24 and p.name >= begin)
    victim = segs[nth_after_second]
    victim.unlink()
    conf = dest / "barman.conf"
    conf.write_text(c.config.read_text().replace(str(c.home), str(home)))
    return conf, victim.name


def test_a_wal_segment_missing_before_the_target_fails_naming_it(bm: Catalogue, tmp_path: Path) -> None:
    conf, gone = _copy_without_segment(bm, tmp_path / "copy", 2)
    n = len(bm.stamps) - 2  # in the last batch: the gap lies between the backup and the target
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n, conf)))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert gone in (res.error or ""), res.error
    assert gone in evidence(res)["recovery_point"]["wal_archive"]["fetch"]["missing_from_repository"]


def test_a_wal_segment_missing_fails_latest(bm: Catalogue, tmp_path: Path) -> None:
    conf, gone = _copy_without_segment(bm, tmp_path / "copy", 3)
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, "latest", len(bm.stamps), conf)))
    assert res.verdict == "failed" and res.exit_code == 1, res.to_json()
    assert gone in (res.error or ""), res.error


def test_the_repository_is_byte_identical_after_drills(bm: Catalogue, tmp_path: Path) -> None:
    before = repo_digest(bm.home)
    assert len([k for k in before if "/base/" in k]) > 100  # the whole catalogue, not an empty folder
    assert any(k.startswith(f"{SERVER}/wals/") for k in before)
    n = BEFORE_SECOND + ROWS + 1
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n)))
    assert res.verdict == "passed", (res.error, res.to_json()["reasons"])
    res2 = run_drill(load_runbook(runbook(tmp_path / "l", bm, "latest", len(bm.stamps))))
    assert res2.verdict == "passed", (res2.error, res2.to_json()["reasons"])
    assert repo_digest(bm.home) == before


def test_drill_validate_checks_the_catalogue_without_a_server(bm: Catalogue, tmp_path: Path) -> None:
    from drills.backends import check_backup
    from drills.errors import BackupDefect

    n = BEFORE_SECOND + 1
    facts = check_backup(load_runbook(runbook(tmp_path / "ok", bm, iso(between(bm, n)), n)).runbook.source)
    assert facts["backup"]["backup_id"] == bm.second_id and facts["tool"].startswith("3.")
    early = iso(bm.stamps[0] - timedelta(hours=1))
    with pytest.raises(BackupDefect, match="outside the restorable range"):
        check_backup(load_runbook(runbook(tmp_path / "early", bm, early, 0)).runbook.source)


def test_a_catalogue_owned_by_the_barman_account_is_drilled_as_that_account(
    bm: Catalogue, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Production shape: barman_user = barman owns a 0700/0600 catalogue; started as root, Barman drops to it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the catalogue copy to the barman account")
    try:
        owner = pwd.getpwnam("barman")
    except KeyError:
        pytest.skip("no barman account (Debian's barman package creates it)")
    dest = Path(tempfile.mkdtemp(prefix="rd-barman-owned-"))  # pytest's tmp_path is 0700 root: untraversable
    dest.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(dest, ignore_errors=True))
    home = dest / "home"
    shutil.copytree(bm.home, home, symlinks=True)
    for dirpath, dirs, files in os.walk(home):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.chown(name, owner.pw_uid, owner.pw_gid)
    conf = dest / "barman.conf"
    conf.write_text(
        bm.config.read_text().replace(str(bm.home), str(home)).replace("barman_user = root", "barman_user = barman")
    )
    before = repo_digest(home)
    n = BEFORE_SECOND + ROWS + 3
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n, conf)))
    assert res.verdict == "passed" and res.exit_code == 0, (res.error, res.to_json()["reasons"])
    assert repo_digest(home) == before


def test_gzip_compressed_segments_are_decompressed_as_barman_would(bm: Catalogue, tmp_path: Path) -> None:
    """``compression = gzip``: Barman files segments gzipped and says so in xlog.db; the drill must inflate them."""
    import gzip

    dest = tmp_path / "copy"
    home = dest / "home"
    shutil.copytree(bm.home, home, symlinks=True)
    wals = home / SERVER / "wals"
    zipped = 0
    for seg in sorted(p for p in wals.glob("*/0*") if len(p.name) == 24):
        seg.write_bytes(gzip.compress(seg.read_bytes()))
        zipped += 1
    db = wals / "xlog.db"
    db.write_text(
        "".join(
            line.rsplit("\t", 1)[0] + ("\tgzip\n" if len(line.split("\t")[0]) == 24 else "\tNone\n")
            for line in db.read_text().splitlines()
        )
    )
    conf = dest / "barman.conf"
    conf.write_text(
        bm.config.read_text().replace(str(bm.home), str(home)).replace("log_level = WARNING", "compression = gzip")
    )
    total = len(bm.stamps)
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, "latest", total, conf)))
    assert res.verdict == "passed" and res.exit_code == 0, (res.error, res.to_json()["reasons"])
    fetch = evidence(res)["recovery_point"]["wal_archive"]["fetch"]
    assert zipped > BATCHES and fetch["read_directly_from_wals_directory"] >= BATCHES, fetch


def test_a_damaged_file_in_the_catalogues_base_backup_fails_the_drill(bm: Catalogue, tmp_path: Path) -> None:
    """``barman recover`` copies without checking: the drill must catch a damaged file against the backup manifest."""
    dest = tmp_path / "copy"
    home = dest / "home"
    shutil.copytree(bm.home, home, symlinks=True)
    data = home / SERVER / "base" / bm.first_id / "data"
    victim = max((data / "base").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16
    victim.write_bytes(bytes(raw))
    conf = dest / "barman.conf"
    conf.write_text(bm.config.read_text().replace(str(bm.home), str(home)))
    n = 3  # restores the first backup
    res = run_drill(load_runbook(runbook(tmp_path / "d", bm, iso(between(bm, n)), n, conf)))
    assert res.verdict == "failed" and res.exit_code == 1 and res.failed_state == "restore", res.error
    assert "does not match its backup_manifest" in (res.error or "") and victim.name in (res.error or ""), res.error
