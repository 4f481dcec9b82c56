"""``kind: pgbackrest``: a drill's restore phase against ``pgbackrest restore`` + recovery by hand.

One run plays production once: a PostgreSQL cluster archiving with ``pgbackrest archive-push``
into a posix repository, ``--rows N`` rows of padding (about 100 bytes each), a full backup,
then ``--wal-mb`` MiB of committed WAL after it (updates of the padding, so replay has work),
two marker commits and a target time between them. Then it restores that set ``--repeat``
times with each method, alternating which goes first:

* ``drill``: ``run_drill`` in-process on a ``kind: pgbackrest`` runbook. Its restore phase is
  ``restore + await_ready`` from the drill's timeline: ``pgbackrest restore``, ``archive-get`` of
  the WAL into a private copy, the header scan and commit search, server start, recovery,
  promotion and the recovery proof. Preflight (``pgbackrest info``) is reported apart.
* ``by hand``: what an operator types: ``pgbackrest restore --set … --type=time --target …
  --target-action=promote --process-max N --archive-mode=off`` into an empty directory, the
  same isolation settings appended (socket only), ``chown -R``, ``pg_ctl start -W`` as the
  server user, then a 10 ms ``pg_is_in_recovery()`` poll until promoted. Recovery fetches WAL
  with pgBackRest's own ``restore_command`` (``archive-get`` from the repository).

Goal: median drill restore phase <= 1.05 x median by-hand time (same ``--process-max``).

    .venv/bin/python benchmarks/bench_pgbackrest_restore.py [--repeat 5] [--rows N] [--wal-mb M] [--process-max P]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from restore_harness import (
    Contest,
    as_user,
    compare,
    fill,
    run_by_hand,
    run_drill_once,
    source_cluster,
    start_archiving,
)

from drills.clock import iso
from drills.engines.postgres.server import PgBinaries, PgCluster
from drills.osutil import RunAs, private_dir

STANZA = "bench"


def _pgbr(conf: Path, run_as: RunAs | None, *args: str) -> str:
    proc = subprocess.run(
        ["pgbackrest", f"--config={conf}", f"--stanza={STANZA}", *args],
        capture_output=True, text=True, check=False, cwd="/", **as_user(run_as),
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"pgbackrest {args[-1]} failed: {proc.stderr.strip()}")
    out: str = proc.stdout
    return out


def build_source(root: Path, rows: int, wal_mb: int, bins: PgBinaries, run_as: RunAs | None) -> datetime:
    """Production: a repository with one full set, WAL after it, and a target between two commits."""
    repo = private_dir(root / "repo", run_as)
    work = private_dir(root / "work", run_as)
    src = source_cluster(root, bins, run_as)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        f"[global]\nrepo1-path={repo}\nrepo1-retention-full=9\nlock-path={work}/lock\nlog-path={work}/log\n"
        f"log-level-file=off\nlog-level-console=warn\nstart-fast=y\ncompress-type=lz4\n\n"
        f"[{STANZA}]\npg1-path={src.datadir}\npg1-socket-path={src.socket_dir}\npg1-port={src.port}\n"
    )
    conf.chmod(0o644)
    start_archiving(src, f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'")

    def backup() -> None:
        _pgbr(conf, run_as, "stanza-create")
        _pgbr(conf, run_as, "--type=full", "backup")

    try:
        return fill(src, rows, wal_mb, backup)
    finally:
        src.stop()


def drill_once(root: Path, target: datetime, i: int, *, process_max: int) -> tuple[float, float]:
    source = (
        f"  kind: pgbackrest\n  stanza: {STANZA}\n  config: {root / 'pgbackrest.conf'}\n"
        f"  target_time: {iso(target)}\n  process_max: {process_max}\n"
    )
    return run_drill_once(root, "bench-pgbackrest", source, i)


def by_hand(root: Path, target: datetime, bins: PgBinaries, run_as: RunAs | None, i: int, *, process_max: int) -> float:
    stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")

    def restore(c: PgCluster) -> None:
        opts = [f"--pg1-path={c.datadir}", f"--process-max={process_max}", "--archive-mode=off", "--type=time"]
        _pgbr(root / "pgbackrest.conf", None, *opts, f"--target={stamp}", "--target-action=promote", "restore")

    return run_by_hand(root, restore, bins=bins, run_as=run_as, i=i)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--wal-mb", type=int, default=256)
    ap.add_argument("--process-max", type=int, default=2)
    args = ap.parse_args(argv)
    contest = Contest(
        prefix="rd-bench-pgbr-",
        build=lambda root, bins, run_as: build_source(root, args.rows, args.wal_mb, bins, run_as),
        drill=partial(drill_once, process_max=args.process_max),
        by_hand=partial(by_hand, process_max=args.process_max),
        built=f"{args.rows} rows, {args.wal_mb} MiB of WAL after the set",
        hand_label="pgbackrest restore + recovery",
        preflight_label="pgbackrest info",
        setting=f"process-max {args.process_max}, ",
    )
    return compare(contest, args.repeat)


if __name__ == "__main__":
    sys.exit(main())
