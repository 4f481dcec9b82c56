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
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from restore_harness import Contest, compare, fill, run_by_hand, run_drill_once, source_cluster, start_archiving

from drills.clock import iso
from drills.engines.postgres.server import PgBinaries, PgCluster
from drills.osutil import RunAs, private_dir

SERVER = "bench"


def _barman(conf: Path, *args: str) -> str:
    proc = subprocess.run(["barman", "-c", str(conf), *args], capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0:
        raise SystemExit(f"barman {args[0]} failed: {proc.stderr.strip()}")
    return proc.stdout


def build_source(root: Path, rows: int, wal_mb: int, bins: PgBinaries, run_as: RunAs | None) -> datetime:
    """Production: a catalogue with one base backup, WAL after it, and a target between two commits."""
    home = root / "home-barman"
    incoming = home / SERVER / "incoming"
    incoming.mkdir(parents=True)
    home.chmod(0o755)
    (home / SERVER).chmod(0o755)
    private_dir(incoming, run_as)
    src = source_cluster(root, bins, run_as)
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
    start_archiving(src, f"'test ! -f {incoming}/%f && cp %p {incoming}/%f'")

    def backup() -> None:
        _barman(conf, "switch-wal", "--force", "--archive", SERVER)
        _barman(conf, "backup", "--wait", SERVER)

    try:
        target = fill(src, rows, wal_mb, backup)
        _barman(conf, "archive-wal", SERVER)
    finally:
        src.stop()
    return target


def drill_once(root: Path, target: datetime, i: int) -> tuple[float, float]:
    source = f"  kind: barman\n  server: {SERVER}\n  config: {root / 'barman.conf'}\n  target_time: {iso(target)}\n"
    return run_drill_once(root, "bench-barman", source, i)


def by_hand(root: Path, target: datetime, bins: PgBinaries, run_as: RunAs | None, i: int) -> float:
    stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")

    def restore(c: PgCluster) -> None:
        _barman(root / "barman.conf", "recover", f"--target-time={stamp}", "--target-action=promote", SERVER,
                "latest", str(c.datadir))  # fmt: skip

    return run_by_hand(root, restore, bins=bins, run_as=run_as, i=i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--wal-mb", type=int, default=256)
    args = ap.parse_args(argv)
    contest = Contest(
        prefix="rd-bench-barman-",
        build=lambda root, bins, run_as: build_source(root, args.rows, args.wal_mb, bins, run_as),
        drill=drill_once,
        by_hand=by_hand,
        built=f"{args.rows} rows, {args.wal_mb} MiB of WAL after the backup",
        hand_label="barman recover + recovery",
        preflight_label="barman list-backups, show-backup, check",
    )
    return compare(contest, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
