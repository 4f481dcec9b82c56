"""``kind: barman``: a drill's restore phase against ``barman recover`` + recovery by hand.

One run plays production once: a PostgreSQL cluster archiving into a Barman server's incoming
directory (``archiver = on``, ``backup_method = postgres``), ``--rows N`` rows of padding
(about 100 bytes each), a base backup (``barman backup``),
then ``--wal-mb`` MiB of committed WAL after it (updates of the padding, so replay has work),
two marker commits and a target time between them. Then it restores that set ``--repeat``
times with each method, alternating which goes first:

* ``drill``: ``run_drill`` in-process on a ``kind: barman`` runbook. Its restore phase is
  ``restore + await_ready`` from the drill's timeline: ``barman recover --get-wal``, the WAL
  copied from the catalogue into a private copy, the header scan and commit search, server
  start, recovery, promotion and the recovery proof. Preflight (list-backups, show-backup,
  check) is reported apart.
* ``by hand``: what an operator types: ``barman recover --target-time … --target-action
  promote SERVER ID DIR`` (Barman copies the WAL up to the target into ``barman_wal`` and sets
  ``restore_command = cp barman_wal/%f %p``), the same isolation settings appended (socket
  only), ``chown -R``, ``pg_ctl start`` as the server user, then a 10 ms
  ``pg_is_in_recovery()`` poll until promoted.

Goal: median drill restore phase <= 1.05 x median by-hand time.

    .venv/bin/python benchmarks/bench_barman_restore.py [--repeat 5] [--rows N] [--wal-mb M]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.clock import iso  # noqa: E402
from drills.engines.postgres.server import PgBinaries, PgCluster, find_pg_binaries, run_as_for_server  # noqa: E402
from drills.logs import configure  # noqa: E402
from drills.osutil import RunAs, free_port, private_dir  # noqa: E402

GOAL_RATIO = 1.05
SERVER = "bench"


def _as(run_as: RunAs | None) -> dict[str, Any]:
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as else {}


def _barman(conf: Path, *args: str) -> str:
    proc = subprocess.run(["barman", "-c", str(conf), *args], capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0:
        raise SystemExit(f"barman {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def build_source(root: Path, rows: int, wal_mb: int, bins: PgBinaries, run_as: RunAs | None) -> tuple[Path, datetime]:
    """Production: a catalogue with one base backup, WAL after it, and a target between two commits."""
    import psycopg

    home = root / "home-barman"
    incoming = home / SERVER / "incoming"
    incoming.mkdir(parents=True)
    home.chmod(0o755)
    (home / SERVER).chmod(0o755)
    private_dir(incoming, run_as)
    (root / "source").mkdir()
    (root / "source").chmod(0o755)
    src = PgCluster(bins, root / "source/data", root / "source/sock", free_port(), run_as, root / "source/log")
    conf = root / "barman.conf"
    conf.write_text(
        f"[barman]\nbarman_user = {pwd.getpwuid(os.geteuid()).pw_name}\nbarman_home = {home}\n"
        f"log_file = {root}/barman.log\nlog_level = WARNING\n\n"
        f"[{SERVER}]\ndescription = bench\n"
        f"conninfo = host={src.socket_dir} port={src.port} user=postgres dbname=postgres\n"
        f"streaming_conninfo = host={src.socket_dir} port={src.port} user=postgres\n"
        f"backup_method = postgres\narchiver = on\nstreaming_archiver = off\npath_prefix = {bins.bindir}\n"
    )
    conf.chmod(0o644)
    src.initdb()
    push = f"'test ! -f {incoming}/%f && cp %p {incoming}/%f'"
    src.start(
        wait=True,
        options={"listen_addresses": "''", "wal_level": "replica", "archive_mode": "on", "archive_command": push,
                 "fsync": "off", "max_wal_size": "4GB"},
    )  # fmt: skip
    try:
        with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("create table pad (id bigint primary key, v text)")
            conn.execute("insert into pad select g, repeat('x', 90) from generate_series(1, %s) g", (rows,))
            conn.execute("create table marks (id int primary key, at timestamptz default clock_timestamp())")
            _barman(conf, "switch-wal", "--force", "--archive", SERVER)
            _barman(conf, "backup", "--wait", SERVER)
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
            a = conn.execute("insert into marks values (1) returning at").fetchone()[0]  # type: ignore[index]
            time.sleep(0.05)
            b = conn.execute("insert into marks values (2) returning at").fetchone()[0]  # type: ignore[index]
            seg = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
            conn.execute("select pg_switch_wal()")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
                if row and row[0] and row[0] >= seg:
                    break
                time.sleep(0.05)
        _barman(conf, "archive-wal", SERVER)
    finally:
        src.stop()
    return conf, a + (b - a) / 2


def run_drill_once(root: Path, conf: Path, target: datetime, i: int) -> tuple[float, float]:
    from drills.api import RunOptions, run_drill
    from drills.runbook import load_runbook

    d = root / f"drill-{i}"
    d.mkdir()
    d.chmod(0o755)
    (d / "rb.yaml").write_text(
        f"name: bench-barman\nsource:\n  kind: barman\n  server: {SERVER}\n  config: {conf}\n"
        f"  target_time: {iso(target)}\n"
        "objectives: {rto_seconds: 3600}\nvalidators:\n  smoke:\n"
        "    - {name: marks, sql: 'select count(*) from marks', expect: 1}\nevidence: {dir: evidence}\n"
    )
    res = run_drill(load_runbook(d / "rb.yaml"), RunOptions(scratch_root=root / "scratch"))
    if res.verdict != "passed":
        raise SystemExit(f"drill failed: {res.error} {res.to_json()['reasons']}")
    phases = res.drill.measurement.rto_phases_ms  # type: ignore[union-attr]
    pre = next(e.duration_ms for e in res.drill.timeline if e.state == "preflight") / 1000
    return (phases["restore"] + phases["await_ready"]) / 1000, pre


def run_by_hand(root: Path, conf: Path, target: datetime, *, bins: PgBinaries, run_as: RunAs | None, i: int) -> float:
    import psycopg

    base = root / f"hand-{i}"
    base.mkdir()
    base.chmod(0o755)
    c = PgCluster(bins, base / "data", base / "sock", free_port(), run_as, base / "log")
    t0 = time.monotonic()
    c.datadir.mkdir(mode=0o700)
    stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    _barman(conf, "recover", f"--target-time={stamp}", "--target-action=promote", SERVER, "latest", str(c.datadir))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--wal-mb", type=int, default=256)
    args = ap.parse_args(argv)
    configure(level="warning")
    bins = find_pg_binaries(15)
    run_as = run_as_for_server()
    root = Path(tempfile.mkdtemp(prefix="rd-bench-barman-"))
    root.chmod(0o755)
    os.environ["RESTORE_DRILLS_HOME"] = str(root / "home")  # journals and the signing key stay in the run's folder
    (root / "scratch").mkdir()
    (root / "scratch").chmod(0o755)
    try:
        t = time.monotonic()
        conf, target = build_source(root, args.rows, args.wal_mb, bins, run_as)
        print(
            f"source built in {time.monotonic() - t:.1f}s: {args.rows} rows, {args.wal_mb} MiB of WAL after the backup"
        )
        drill: list[float] = []
        pre: list[float] = []
        hand: list[float] = []
        for i in range(args.repeat):
            order = ["drill", "hand"] if i % 2 == 0 else ["hand", "drill"]
            for m in order:
                if m == "drill":
                    r, p = run_drill_once(root, conf, target, i)
                    drill.append(r)
                    pre.append(p)
                else:
                    hand.append(run_by_hand(root, conf, target, bins=bins, run_as=run_as, i=i))
            print(f"round {i + 1}: drill {drill[-1]:.2f}s (+ preflight {pre[-1]:.2f}s)  by hand {hand[-1]:.2f}s")
        md, mh = statistics.median(drill), statistics.median(hand)
        ratio = md / mh
        print(f"\nmethod    median   min      max      ({args.repeat} rounds)")
        print(f"drill     {md:6.2f}s  {min(drill):6.2f}s  {max(drill):6.2f}s   restore + await_ready")
        print(f"by hand   {mh:6.2f}s  {min(hand):6.2f}s  {max(hand):6.2f}s   barman recover + recovery")
        print(f"drill preflight (barman list-backups, show-backup, check): {statistics.median(pre):.2f}s")
        print(f"ratio drill / by hand: {ratio:.3f} (goal <= {GOAL_RATIO}); "
              f"with preflight: {(md + statistics.median(pre)) / mh:.3f}")  # fmt: skip
        return 0 if ratio <= GOAL_RATIO else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
