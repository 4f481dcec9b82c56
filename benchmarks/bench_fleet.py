"""``drill fleet`` at scale: many RDS drills on moto at once, within a shared AWS API budget.

Run: .venv/bin/python benchmarks/bench_fleet.py [--drills 200] [--parallel 20] [--budget 40] [--scale 200]
     [--moto server|inprocess]

Every drill is a whole ``run_drill`` (preflight, isolation checks, restore from its own snapshot,
waits, password reset, validators on a real local PostgreSQL through a loopback tunnel, teardown,
signed evidence in one shared directory), run by :func:`drills.fleet.run_fleet`, the function behind
``drill fleet``. Each drill has its own boto3 session (as in production).

Moto answers at once, so each restore reads ``creating`` for a realistic time (uniform 10 to 40
minutes, ``modifying`` 1 to 3 minutes after the password reset: :class:`aws_fakes.Fakes`), on a
clock that runs ``--scale`` times faster than real time (200: a 30-minute restore takes 9 s). The
budget is not scaled: it counts real seconds, and so does the measurement.

Reported: the most AWS calls in any 1-second window (every request every session sent,
``before-send``, in real time: what AWS would count) against the budget; calls per drill; leaked
resources (every ``drill-*`` DB instance, subnet group and security group left in moto); verdicts;
wall time; how long drills waited for tokens. Exit 1 if a window exceeded the budget, anything
leaked, or a drill did not pass.

Moto: ``--moto server`` (default) runs moto's ThreadedMotoServer on loopback and points every
session at it (``AWS_ENDPOINT_URL``). ``--moto inprocess`` uses ``mock_aws`` in this process;
``bench_aws_calls.py``'s 20-thread part met a race there (see the README).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aws_fakes import REGION, Fakes, drill_leftovers, make_world  # noqa: E402
from dataplane import pg_plane  # noqa: E402
from fleet_helpers import CallLog, ScaledClock, add_sources, drop_users, watch_masters, write_runbook  # noqa: E402
from servers import start_postgres  # noqa: E402

from drills.api import RunOptions  # noqa: E402
from drills.fleet import FleetOptions, load_fleet, run_fleet  # noqa: E402
from drills.runbook import LoadedRunbook  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet: errors only
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto server's access log


SLACK = {"states": {"connect": {"timeout_seconds": 3600}}}


@contextmanager
def moto(mode: str) -> Iterator[None]:
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION)  # noqa: S106 - moto's
    if mode == "inprocess":
        from moto import mock_aws

        with mock_aws():
            yield
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    try:
        yield
    finally:
        del os.environ["AWS_ENDPOINT_URL"]
        server.stop()


def run(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Sources, runbooks and the fleet; what the report needs."""
    server = start_postgres(tmp, settings={"max_connections": str(20 + 6 * a.parallel)})
    try:
        with moto(a.moto), pg_plane(server) as plane:
            w = make_world(boto3.Session(region_name=REGION), rds=False)
            t0 = time.perf_counter()
            sources = add_sources(w, plane, a.drills)  # one source (own master user) per drill
            setup = time.perf_counter() - t0
            evidence, rbdir = tmp / "evidence", tmp / "runbooks"
            rbdir.mkdir()
            for i, (_, snap) in enumerate(sources):
                # the scaled clock multiplies real work too: a 0.5 s connect under load reads 100 s (default limit 120)
                write_runbook(rbdir / f"db-{i:03d}.yaml", w, plane, f"db-{i:03d}", snap, evidence, extra=SLACK)
            clock = ScaledClock(a.scale)
            log = CallLog()
            rng = random.Random(13)
            phases = {
                f"db-{i:03d}": {"restore_seconds": rng.uniform(600, 2400), "modify_seconds": rng.uniform(60, 180)}
                for i in range(a.drills)
            }
            per_drill: dict[str, CallLog] = {}

            def session_for(lr: LoadedRunbook) -> Any:
                session = boto3.Session(region_name=REGION)
                fakes = Fakes(clock, rng=random.Random(lr.runbook.name), **phases[lr.runbook.name])  # type: ignore[arg-type]
                fakes.install(session)
                watch_masters(session, plane)
                log.watch(session)
                per_drill[lr.runbook.name] = own = CallLog()
                own.watch(session)
                return session

            opts = FleetOptions(
                parallel=a.parallel,
                budget=a.budget or None,
                run=RunOptions(clock=clock, scratch_root=tmp),
                session_for=session_for,
            )
            runbooks = load_fleet([rbdir])
            t0 = time.perf_counter()
            res = run_fleet(runbooks, opts)
            wall = time.perf_counter() - t0
            leaked = drill_leftovers(w.session)
            drop_users(plane, [user for user, _ in sources])
    finally:
        server.stop()
    return {"res": res, "log": log, "per_drill": per_drill, "wall": wall, "setup": setup, "leaked": leaked}


def report(a: argparse.Namespace, out: dict[str, Any]) -> bool:
    res, log, wall, leaked = out["res"], out["log"], out["wall"], out["leaked"]
    verdicts = Counter(r.verdict for r in res.rows)
    counts = [len(c.calls) for c in out["per_drill"].values()]
    peak = log.max_per_second()
    ops = Counter(op for _, op in log.calls)
    print(f"moto: {a.moto}; {a.drills} RDS drills, --parallel {a.parallel}, --budget {a.budget or 'none'}/s, "
          f"restores 10-40 min at {a.scale:g}x (setup of {a.drills} sources {out['setup']:.1f}s)")  # fmt: skip
    print(f"verdicts: {dict(verdicts)}; exit {res.exit_code}")
    for r in res.rows:
        if r.exit_code != 0:
            print(f"   {r.runbook.name}: {r.verdict} {r.exit_code}: {r.error}")
    print(f"AWS calls: {len(log.calls)} in {wall:.1f}s wall = {len(log.calls) / wall:.1f}/s mean; "
          f"max in any 1 s window: {peak} (budget {a.budget or 'none'})")  # fmt: skip
    print(f"calls per drill: mean {statistics.mean(counts):.1f}, min {min(counts)}, max {max(counts)}")
    print("   " + ", ".join(f"{k}={v}" for k, v in ops.most_common(8)))
    if res.budget is not None:
        for (account, region), s in res.budget.stats().items():
            per = s.wait_seconds / max(1, a.drills)
            print(f"budget {account} {region}: {s.calls} tokens, {s.waited} waited, "
                  f"{per:.2f}s per drill on average, longest {s.max_wait_seconds:.2f}s")  # fmt: skip
    print(f"leaked drill-* resources: {len(leaked)} {leaked[:5]}")
    ok = (not a.budget or peak <= a.budget) and not leaked and verdicts.get("passed", 0) == a.drills
    print("OK" if ok else "NOT OK")
    return bool(ok)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--drills", type=int, default=200)
    p.add_argument("--parallel", type=int, default=20)
    p.add_argument("--budget", type=float, default=40.0, help="AWS calls per second (0: no budget)")
    p.add_argument("--scale", type=float, default=200.0, help="drill time runs this many times faster")
    p.add_argument("--moto", choices=["server", "inprocess"], default="server")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    tmp.chmod(0o755)
    os.environ["RESTORE_DRILLS_HOME"] = str(tmp / "home")
    return 0 if report(a, run(a, tmp)) else 1


if __name__ == "__main__":
    sys.exit(main())
