"""What the pgBackRest and Barman restore benchmarks share: production's workload, one drill, the
by-hand server start, and the alternating rounds with their table.

Each benchmark keeps only what differs: how its repository is configured and filled, the source
block of its runbook, and the tool command an operator types to restore. The rest lives here so
that both compare the drill with the same by-hand baseline, measured the same way.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.engines.postgres.server import PgBinaries, PgCluster, find_pg_binaries, run_as_for_server  # noqa: E402
from drills.logs import configure  # noqa: E402
from drills.osutil import RunAs, free_port  # noqa: E402

GOAL_RATIO = 1.05


def as_user(run_as: RunAs | None) -> dict[str, Any]:
    """``subprocess.run`` arguments that run a tool as the server's user (when the drill runs as root)."""
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as else {}


def source_cluster(root: Path, bins: PgBinaries, run_as: RunAs | None) -> PgCluster:
    """Production's cluster, not yet initialised, in a folder the server's user can reach."""
    (root / "source").mkdir()
    (root / "source").chmod(0o755)
    return PgCluster(bins, root / "source/data", root / "source/sock", free_port(), run_as, root / "source/log")


def start_archiving(src: PgCluster, archive_command: str) -> None:
    src.initdb()
    src.start(
        wait=True,
        options={"listen_addresses": "''", "wal_level": "replica", "archive_mode": "on",
                 "archive_command": archive_command, "fsync": "off", "max_wal_size": "4GB"},
    )  # fmt: skip


def fill(src: PgCluster, rows: int, wal_mb: int, backup: Callable[[], None]) -> datetime:
    """``rows`` rows, ``backup()``, ``wal_mb`` MiB of WAL after it, two marks and every segment archived.

    Returns the target: halfway between the two marks' commits, so the restore must stop between them.
    """
    import psycopg

    with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
        conn.execute("create table pad (id bigint primary key, v text)")
        conn.execute("insert into pad select g, repeat('x', 90) from generate_series(1, %s) g", (rows,))
        conn.execute("create table marks (id int primary key, at timestamptz default clock_timestamp())")
        backup()
        time.sleep(1.1)
        written = 0
        step = max(1, rows // 10)
        lo = 1
        while written < wal_mb << 20:
            before = conn.execute("select pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
            conn.execute("update pad set v = md5(v) || id where id between %s and %s", (lo, lo + step))
            lo = (lo + step) % max(rows, 1)
            after = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before,)).fetchone()
            written += int(after[0])  # type: ignore[index]
        a: datetime = conn.execute("insert into marks values (1) returning at").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        b: datetime = conn.execute("insert into marks values (2) returning at").fetchone()[0]  # type: ignore[index]
        seg = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
        conn.execute("select pg_switch_wal()")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
            if row and row[0] and row[0] >= seg:
                break
            time.sleep(0.05)
    return a + (b - a) / 2


def run_drill_once(root: Path, name: str, source_yaml: str, i: int) -> tuple[float, float]:
    """One in-process drill; (restore + await_ready, preflight) in seconds from its own timeline."""
    from drills.api import RunOptions, run_drill
    from drills.runbook import load_runbook

    d = root / f"drill-{i}"
    d.mkdir()
    d.chmod(0o755)
    (d / "rb.yaml").write_text(
        f"name: {name}\nsource:\n{source_yaml}"
        "objectives: {rto_seconds: 3600}\nvalidators:\n  smoke:\n"
        "    - {name: marks, sql: 'select count(*) from marks', expect: 1}\nevidence: {dir: evidence}\n"
    )
    res = run_drill(load_runbook(d / "rb.yaml"), RunOptions(scratch_root=root / "scratch"))
    if res.verdict != "passed":
        raise SystemExit(f"drill failed: {res.error} {res.to_json()['reasons']}")
    phases = res.drill.measurement.rto_phases_ms  # type: ignore[union-attr]
    pre = next(e.duration_ms for e in res.drill.timeline if e.state == "preflight") / 1000
    return (phases["restore"] + phases["await_ready"]) / 1000, pre


def run_by_hand(
    root: Path, restore: Callable[[PgCluster], None], *, bins: PgBinaries, run_as: RunAs | None, i: int
) -> float:
    """``restore(cluster)`` as an operator types it, then socket-only settings, start, and a 10 ms poll
    until promoted; seconds from the first command to a writable server."""
    import psycopg

    base = root / f"hand-{i}"
    base.mkdir()
    base.chmod(0o755)
    c = PgCluster(bins, base / "data", base / "sock", free_port(), run_as, base / "log")
    t0 = time.monotonic()
    c.datadir.mkdir(mode=0o700)
    restore(c)
    with (c.datadir / "postgresql.auto.conf").open("a") as fh:
        fh.write(f"listen_addresses = ''\nunix_socket_directories = '{c.socket_dir}'\nport = {c.port}\n")
    (c.datadir / "pg_hba.conf").write_text("local all all trust\n")
    if run_as is not None:
        subprocess.run(["chown", "-R", f"{run_as.uid}:{run_as.gid}", str(base)], check=True)
    c.start(wait=False)
    while True:
        try:
            with psycopg.connect(c.conninfo("postgres"), autocommit=True, connect_timeout=5) as conn:
                if not conn.execute("select pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    break
        except psycopg.OperationalError:
            pass
        time.sleep(0.01)
    took = time.monotonic() - t0
    c.stop()
    shutil.rmtree(base)
    return took


@dataclass(frozen=True)
class Contest:
    """One benchmark: how to build production, run the drill and restore by hand, and what to call them."""

    prefix: str  # of the scratch folder
    build: Callable[[Path, PgBinaries, RunAs | None], datetime]  # (root, bins, run_as) -> target
    drill: Callable[[Path, datetime, int], tuple[float, float]]  # (root, target, round)
    by_hand: Callable[[Path, datetime, PgBinaries, RunAs | None, int], float]
    built: str  # "1000 rows, 16 MiB of WAL after the set"
    hand_label: str  # "pgbackrest restore + recovery"
    preflight_label: str  # "pgbackrest info"
    setting: str = ""  # "process-max 2, " in the table's heading


def compare(contest: Contest, repeat: int) -> int:
    """Alternate drill and by-hand rounds (so neither always runs on a warm cache) and print the table;
    exit status 1 when the drill's median is over ``GOAL_RATIO`` x the by-hand median."""
    configure(level="warning")
    bins = find_pg_binaries(15)
    run_as = run_as_for_server()
    root = Path(tempfile.mkdtemp(prefix=contest.prefix))
    root.chmod(0o755)
    os.environ["RESTORE_DRILLS_HOME"] = str(root / "home")  # journals and the signing key stay in the run's folder
    (root / "scratch").mkdir()
    (root / "scratch").chmod(0o755)
    try:
        t = time.monotonic()
        target = contest.build(root, bins, run_as)
        print(f"source built in {time.monotonic() - t:.1f}s: {contest.built}")
        drill: list[float] = []
        pre: list[float] = []
        hand: list[float] = []
        for i in range(repeat):
            for m in ["drill", "hand"] if i % 2 == 0 else ["hand", "drill"]:
                if m == "drill":
                    r, p = contest.drill(root, target, i)
                    drill.append(r)
                    pre.append(p)
                else:
                    hand.append(contest.by_hand(root, target, bins, run_as, i))
            print(f"round {i + 1}: drill {drill[-1]:.2f}s (+ preflight {pre[-1]:.2f}s)  by hand {hand[-1]:.2f}s")
        md, mh = statistics.median(drill), statistics.median(hand)
        ratio = md / mh
        print(f"\nmethod    median   min      max      ({contest.setting}{repeat} rounds)")
        print(f"drill     {md:6.2f}s  {min(drill):6.2f}s  {max(drill):6.2f}s   restore + await_ready")
        print(f"by hand   {mh:6.2f}s  {min(hand):6.2f}s  {max(hand):6.2f}s   {contest.hand_label}")
        print(f"drill preflight ({contest.preflight_label}, not in the ratio): median {statistics.median(pre):.2f}s")
        print(f"ratio drill / by hand: {ratio:.3f} (goal <= {GOAL_RATIO}); "
              f"with preflight: {(md + statistics.median(pre)) / mh:.3f}")  # fmt: skip
        return 0 if ratio <= GOAL_RATIO else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
