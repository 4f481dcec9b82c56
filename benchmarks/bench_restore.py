"""Orchestrator overhead: a drill's restore phase against the same PITR done by hand.

One run builds the demo source once (``drills.demo.postgres.build_demo_source``: a
PostgreSQL cluster with WAL archiving, a base backup, activity, a target time
and a runbook), then restores it ``--repeat`` times with each method, rotating
which method goes first so caches and page-cache warmth are shared fairly:

* ``drill``: ``run_drill(load_runbook(runbook))`` in-process. Its "restore
  phase" is ``restore + await_ready`` from the drill's own timeline
  (``res.drill.measurement.rto_phases_ms``): copy the base backup, write the
  recovery settings, ``pg_ctl start -W``, poll until promoted.
* ``by hand (-w)``: what an operator would type: ``cp -a`` the base backup,
  append the same recovery and isolation settings to ``postgresql.auto.conf``,
  touch ``recovery.signal``, ``chown -R`` to the server user when root,
  ``pg_ctl start -w`` as that user, then poll ``pg_is_in_recovery()`` with
  psycopg until it is false. Timed from the copy start to promoted.
* ``by hand (-W)``: the same, but ``pg_ctl start -W`` and a fixed 10 ms poll:
  the tightest loop a script could do. ``pg_ctl -w`` itself polls every
  100 ms, so this is the floor, not what people type.

Goal: median drill restore phase <= 1.10 x median by-hand (-w) time.

    .venv/bin/python benchmarks/bench_restore.py [--repeat 5] [--rows N] [--workdir DIR] [--keep]

``--rows N`` makes the restore bigger: after the demo is built it restarts
the source, fills a separate database ``bench_pad`` with N rows (about 100
bytes each), takes a fresh base backup, commits two more orders and moves the
runbook's target time between them. The shop database, and so the drill's
validators, are untouched apart from the two orders.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from drills.demo.postgres import DemoSource, archiving_options, build_demo_source  # noqa: E402
from drills.engines.postgres.server import PgBinaries, PgCluster, find_pg_binaries, run_as_for_server  # noqa: E402
from drills.logs import configure  # noqa: E402
from drills.osutil import RunAs, free_port  # noqa: E402

GOAL_RATIO = 1.10
POLL_S = 0.01
SHORT: dict[str, str] = {}
STAGES: dict[str, dict[str, list[float]]] = {}  # by-hand method -> stage -> seconds


def _record_stages(method: str, t0: float, marks: dict[str, float]) -> None:
    prev = t0
    for name, t in marks.items():
        STAGES.setdefault(method, {}).setdefault(name, []).append(t - prev)
        prev = t


@dataclass
class DrillSample:
    restore_phase_s: float  # restore + await_ready from the drill's timeline
    rto_s: float | None
    wall_s: float  # run_drill end to end: preflight .. teardown + evidence
    phases_ms: dict[str, int]
    verdict: str


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _as_server(run_as: RunAs | None) -> dict[str, object]:
    return {} if run_as is None else {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


# ---------------------------------------------------------------- the source


def _pad_source(demo: DemoSource, rows: int, bins: PgBinaries, run_as: RunAs | None) -> DemoSource:
    """Grow the cluster by ``rows`` rows in another database, re-take the base backup, move the target."""
    import psycopg

    from drills.demo.postgres import ACTIVITY_ROWS, _runbook_text, _wait_archived

    wd = demo.workdir
    wal = wd / "backups" / "wal"
    src = PgCluster(
        bins, wd / "source" / "data", wd / "source" / "sock", free_port(), run_as, wd / "source" / "pad.log"
    )
    src.start(wait=True, options=archiving_options(wal))
    try:
        with psycopg.connect(src.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("create database bench_pad")
        with psycopg.connect(src.conninfo("bench_pad"), autocommit=True) as conn:
            conn.execute("create table pad (id bigint primary key, filler text not null)")
            conn.execute("insert into pad select g, repeat(md5(g::text), 3) from generate_series(1, %s) g", (rows,))
            conn.execute("checkpoint")
        base = wd / "backups" / "base"
        shutil.rmtree(base)
        subprocess.run(
            [bins.tool("pg_basebackup"), "-h", str(src.socket_dir), "-p", str(src.port), "-U", "postgres",
             "-D", str(base), "-X", "none", "-c", "fast", "-l", "restore-drills bench"],
            check=True, capture_output=True,
        )  # fmt: skip
        stamps: list[datetime] = []
        with psycopg.connect(src.conninfo("shop"), autocommit=True) as conn:
            for i in range(2):
                row = conn.execute(
                    "insert into orders (customer_id, status, total_cents) values (%s, 'new', 1) returning created_at",
                    (1 + i,),
                ).fetchone()
                assert row is not None
                stamps.append(row[0])
                time.sleep(0.05)
            conn.execute("select pg_switch_wal()")
            seg = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()
            _wait_archived(conn, seg[0] if seg else "")
    finally:
        src.stop()
    target = stamps[0] + (stamps[1] - stamps[0]) / 2
    demo.runbook.write_text(_runbook_text(target, 5000 + ACTIVITY_ROWS + 1, ACTIVITY_ROWS + 1))
    return dataclasses.replace(demo, target_time=target, rows_before_target=5000 + ACTIVITY_ROWS + 1)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------- the methods


def run_via_drill(demo: DemoSource, home: Path, scratch: Path) -> DrillSample:
    from drills.api import RunOptions, run_drill
    from drills.runbook import load_runbook

    opts = RunOptions(trigger="manual", home=home, scratch_root=scratch)
    t0 = time.perf_counter()
    res = run_drill(load_runbook(demo.runbook), opts)
    wall = time.perf_counter() - t0
    m = res.drill.measurement
    phases = dict(m.rto_phases_ms) if m else {}
    if "restore" not in phases or "await_ready" not in phases:
        raise SystemExit(f"drill did not get through the restore: {res.error} (phases {phases})")
    if res.verdict != "passed":
        print(f"  warning: drill verdict {res.verdict}: {res.error}", file=sys.stderr)
    return DrillSample(
        restore_phase_s=(phases["restore"] + phases["await_ready"]) / 1000,
        rto_s=res.rto_seconds,
        wall_s=wall,
        phases_ms=phases,
        verdict=res.verdict,
    )


def run_by_hand(demo: DemoSource, bins: PgBinaries, run_as: RunAs | None, root: Path, *, pg_ctl_wait: str) -> float:
    """The same PITR with shell tools; seconds from the copy start until pg_is_in_recovery() is false."""
    import psycopg

    base, wal = demo.workdir / "backups" / "base", demo.workdir / "backups" / "wal"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)
    data, sock, log = root / "data", root / "sock", root / "server.log"
    port = free_port()
    owner = f"{run_as.name}:" if run_as else None
    try:
        t0 = time.perf_counter()
        subprocess.run(["cp", "-a", str(base), str(data)], check=True)
        marks = {"copy": time.perf_counter()}
        (data / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        target = demo.target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        settings = {
            "restore_command": f"cp {wal}/%f %p",
            "recovery_target_time": target,
            "recovery_target_action": "promote",
            "recovery_target_timeline": "current",
            "listen_addresses": "",
            "unix_socket_directories": str(sock),
            "unix_socket_permissions": "0700",
            "port": str(port),
            "archive_mode": "off",
            "archive_command": "",
            "primary_conninfo": "",
            "hot_standby": "off",
            "logging_collector": "off",
        }
        with (data / "postgresql.auto.conf").open("a") as fh:
            fh.writelines(f"{k} = {_quote(v)}\n" for k, v in settings.items())
        (data / "recovery.signal").touch()
        sock.mkdir(mode=0o700)
        log.touch()
        data.chmod(0o700)
        if owner:
            subprocess.run(["chown", "-R", owner, str(data), str(sock), str(log)], check=True)
        marks["configure+chown"] = time.perf_counter()
        subprocess.run(
            [bins.tool("pg_ctl"), "start", "-D", str(data), "-l", str(log), "-s", pg_ctl_wait, "-t", "120"],
            check=True, cwd="/", start_new_session=True, **_as_server(run_as),  # type: ignore[call-overload]
        )  # fmt: skip
        marks[f"pg_ctl start {pg_ctl_wait}"] = time.perf_counter()
        conninfo = f"host={sock} port={port} dbname=postgres user=postgres connect_timeout=5"
        while True:
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    row = conn.execute("select pg_is_in_recovery()").fetchone()
                    if row is not None and not row[0]:
                        marks["poll"] = time.perf_counter()
                        _record_stages(f"hand{pg_ctl_wait}", t0, marks)
                        return marks["poll"] - t0
            except psycopg.OperationalError:
                pass
            time.sleep(POLL_S)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [bins.tool("pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w", "-s"],
                check=False, cwd="/", capture_output=True, **_as_server(run_as),  # type: ignore[call-overload]
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- report


def _fmt(xs: list[float]) -> str:
    return f"{min(xs):8.3f} {statistics.median(xs):8.3f} {max(xs):8.3f}"


def _report(names: list[str], times: dict[str, list[float]], drills: list[DrillSample], repeat: int) -> float:
    """Print the table; return the ratio of medians drill / by hand (-w)."""
    print()
    print(f"{'method':34} {'min s':>8} {'median':>8} {'max':>8}   (n={repeat})")
    for n in names:
        print(f"{n:34} {_fmt(times[n])}")
    drill_med = statistics.median(times[names[0]])
    ratio = drill_med / statistics.median(times[names[1]])
    floor = drill_med / statistics.median(times[names[2]])
    verdict = "OK" if ratio <= GOAL_RATIO else "OVER GOAL"
    print(f"\nratio of medians drill / by hand (-w): {ratio:.3f}  (goal <= {GOAL_RATIO:.2f}: {verdict})")
    print(f"ratio of medians drill / by hand (-W, 10ms poll, the floor): {floor:.3f}")

    print("\ncontext (drill):")
    for k in ("restore", "await_ready", "connect", "validate"):
        vals = [s.phases_ms.get(k, 0) / 1000 for s in drills]
        print(f"  {'phase ' + k:34} {_fmt(vals)}")
    rtos = [s.rto_s for s in drills if s.rto_s is not None]
    if rtos:
        print(f"  {'RTO (restore .. validate)':34} {_fmt(rtos)}")
    print(f"  {'run_drill wall (+teardown,evidence)':34} {_fmt([s.wall_s for s in drills])}")
    print(f"  verdicts: {', '.join(sorted({s.verdict for s in drills}))}")
    for method, stages in STAGES.items():
        print(f"context ({method}):")
        for k, vals in stages.items():
            print(f"  {'stage ' + k:34} {_fmt(vals)}")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=5, help="restores per method (default 5)")
    ap.add_argument("--rows", type=int, default=0, help="grow the restore by N padding rows (default: the demo as is)")
    ap.add_argument("--workdir", type=Path, help="where to build the source (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    ap.add_argument("--log-level", default="warning", help="the drill's log level on stderr (default warning)")
    a = ap.parse_args(argv)
    configure(level=a.log_level)

    wd = a.workdir or Path(tempfile.mkdtemp(prefix="bench-restore-"))
    try:
        t0 = time.perf_counter()
        demo = build_demo_source(wd)
        bins, run_as = find_pg_binaries(), run_as_for_server()
        if a.rows:
            demo = _pad_source(demo, a.rows, bins, run_as)
        base_mb = _du(wd / "backups" / "base") / 1e6
        wal_n = len([p for p in (wd / "backups" / "wal").iterdir() if len(p.name) == 24])
        print(
            f"source built in {time.perf_counter() - t0:.1f}s: PostgreSQL {bins.major}, base backup {base_mb:.1f} MB, "
            f"{wal_n} WAL segments, server user {run_as.name if run_as else getpass.getuser()}, workdir {wd}"
        )
        (wd / "scratch").mkdir(exist_ok=True)
        (wd / "scratch").chmod(0o755)

        methods: dict[str, Callable[[], float]] = {}
        drills: list[DrillSample] = []

        def drill_once() -> float:
            s = run_via_drill(demo, wd / "home", wd / "scratch")
            drills.append(s)
            return s.restore_phase_s

        methods["drill (restore+await_ready)"] = drill_once
        methods["by hand (pg_ctl -w)"] = lambda: run_by_hand(demo, bins, run_as, wd / "byhand", pg_ctl_wait="-w")
        methods["by hand (pg_ctl -W, 10ms poll)"] = lambda: run_by_hand(
            demo, bins, run_as, wd / "byhand", pg_ctl_wait="-W"
        )
        names = list(methods)
        SHORT.update(zip(names, ("drill", "hand-w", "hand-W"), strict=True))
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(a.repeat):
            order = names[i % len(names) :] + names[: i % len(names)]
            for n in order:
                times[n].append(methods[n]())
            print(f"  round {i + 1}/{a.repeat}: " + "  ".join(f"{SHORT[n]}={times[n][-1]:.3f}s" for n in order))

        ratio = _report(names, times, drills, a.repeat)
        return 0 if ratio <= GOAL_RATIO else 1
    finally:
        if not a.keep and a.workdir is None:
            shutil.rmtree(wd, ignore_errors=True)
        elif a.keep:
            print(f"workdir kept: {wd}")


if __name__ == "__main__":
    sys.exit(main())
