"""How many AWS calls a drill costs, how well it measures "available", and how it copes with throttling.

Run: .venv/bin/python benchmarks/bench_aws_calls.py

1. One RDS and one Aurora snapshot drill whose restore takes a simulated 2 hours
   (FakeClock, no real waiting): API calls in total and per operation.
2. 30 RDS drills with restore times spread over 1.5-2.5 h: the worst error of
   the measured "instance-available" mark against the injected truth, and the
   precision the backend claimed for it.
3. 20 concurrent RDS drills (threads) against one moto, 20 % of all calls
   throttled: all must complete, nothing may leak; wall time in total.
4. The "available" mark with and without the runbook's history (``--paced N``,
   default 40 drills per row): each drill's restore time and a history of 7
   past ones are drawn from the same distribution; the same drill runs once
   with the plain policy and once with the history's ``ForecastPollPolicy``
   handed to the backend in ``BackendSettings.restore_poll`` (as ``run_drill``
   does), through preflight, restore and await_ready. Reported: DescribeDBInstances
   calls per drill, the mark's error against the injected truth (p50, p95, max),
   and the widest precision the backend claimed.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import structlog  # noqa: E402
import yaml  # noqa: E402
from aws_fakes import REGION, Fakes, World, drill_leftovers, isolation, make_world, settings  # noqa: E402

from drills.aws.aurora_declaration import AuroraSnapshotSource  # noqa: E402
from drills.aws.rds_declaration import RdsSnapshotSource  # noqa: E402
from drills.backends import backend_factory  # noqa: E402
from drills.backends.base import Mark  # noqa: E402
from drills.clock import FakeClock  # noqa: E402
from drills.errors import DrillError  # noqa: E402
from drills.forecast_poll import ForecastPollPolicy, forecast  # noqa: E402
from drills.journal import Journal  # noqa: E402
from drills.machine import Drill, default_states, run_machine  # noqa: E402
from drills.runbook import load_runbook  # noqa: E402

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet: warnings and up


@dataclass
class Outcome:
    error: DrillError | None
    marks: list[Mark]
    teardown_errors: list[str]


def drive(backend: Any, clock: FakeClock) -> Outcome:
    """The AWS half of a drill through the real machine: preflight, restore, await_ready, then teardown.

    The control plane is what this benchmark measures; connect and validate (no AWS call but the data plane's)
    are left out of the state table, so no database is needed.
    """
    with tempfile.TemporaryDirectory(prefix="bench-aws-") as tmp:
        doc = {
            "name": backend.settings.runbook_name,
            "source": backend.source.model_dump(mode="json", exclude_none=True),
            "objectives": {"rto_seconds": 4 * 3600},
            "evidence": {"dir": str(Path(tmp) / "evidence")},
        }
        (Path(tmp) / "rb.yaml").write_text(yaml.safe_dump(doc))
        loaded = load_runbook(Path(tmp) / "rb.yaml")
        d = Drill(
            loaded=loaded,
            backend=backend,
            clock=clock,
            journal=Journal.create(backend.settings.run_id, clock, Path(tmp) / "home"),
            run_validators=lambda _d: None,  # type: ignore[arg-type,return-value]
            probe=lambda _ep: "",
            measure=lambda _d: None,  # type: ignore[arg-type,return-value]
        )
        states = [s for s in default_states(loaded) if s.name in ("preflight", "restore", "await_ready")]
        run_machine(d, states, lambda _d: None)
        d.journal.close()
        return Outcome(d.error, d.marks, d.teardown_errors)


def rds_source(w: World) -> RdsSnapshotSource:
    return RdsSnapshotSource.model_validate(
        {"kind": "rds-snapshot", "region": REGION, "engine": "postgres", "snapshot": w.snapshot,
         "isolation": isolation(w)}
    )  # fmt: skip


def aurora_source(w: World) -> AuroraSnapshotSource:
    return AuroraSnapshotSource.model_validate(
        {"kind": "aurora-snapshot", "region": REGION, "engine": "aurora-postgresql",
         "snapshot": w.cluster_snapshot, "isolation": isolation(w)}
    )  # fmt: skip


def one_drill(aurora: bool, restore_seconds: float) -> tuple[Counter[str], Any]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session, aurora=aurora, rds=not aurora)
        clock = FakeClock()
        fakes = Fakes(clock, restore_seconds=restore_seconds, modify_seconds=120, create_seconds=600).install(session)
        src = aurora_source(w) if aurora else rds_source(w)
        out = drive(backend_factory("aurora" if aurora else "rds")(src, settings(session, clock)), clock)
        assert out.error is None, out.error
        assert drill_leftovers(session) == []
        return Counter(fakes.calls), out


def mark_error(trials: int = 30) -> tuple[float, float, float]:
    """(worst |error| s, mean |error| s, worst claimed precision s) of instance-available."""
    rng = random.Random(42)
    errors, claimed = [], []
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        clock = FakeClock()
        fakes = Fakes(clock).install(session)
        for i in range(trials):
            fakes.restore_seconds = rng.uniform(5400, 9000)
            fakes.calls.clear()
            b = backend_factory("rds")(rds_source(w), settings(session, clock, run_id=f"acc-{i}"))
            out = drive(b, clock)
            assert out.error is None, out.error
            mark = next(m for m in out.marks if m.name == "instance-available")
            measured = datetime.fromisoformat(mark.at.replace("Z", "+00:00"))
            errors.append(abs((measured - fakes.ready_at[b.instance_id]).total_seconds()))
            claimed.append(mark.precision_ms / 1000)
    return max(errors), sum(errors) / len(errors), max(claimed)


SCENARIOS = [("~2 h, steady (sd 60 s)", 7200, 60, 1.0), ("~2 h, sd 300 s", 7200, 300, 1.0),
             ("~30 min, sd 120 s", 1800, 120, 1.0), ("~2 h, forecast wrong (1.5x)", 7200, 300, 1.5)]  # fmt: skip


def paced(trials: int) -> list[tuple[str, str, float, float, float, float, float]]:
    """Per scenario and policy: (name, policy, describes/drill, p50, p95, max error s, max claimed s)."""
    rng = random.Random(20261201)
    rows = []
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        w = make_world(session)
        clock = FakeClock()
        fakes = Fakes(clock).install(session)
        for name, mean, sd, late in SCENARIOS:
            got: dict[str, list[tuple[int, float, float]]] = {"plain": [], "forecast": []}
            for i in range(trials):
                history = [max(60.0, rng.gauss(mean, sd)) for _ in range(7)]
                fakes.restore_seconds = max(60.0, rng.gauss(mean, sd)) * late
                for label, policy in (("plain", None), ("forecast", ForecastPollPolicy(forecast=forecast(history)))):
                    fakes.calls.clear()
                    run = f"pace-{len(rows)}-{i}-{label}"
                    b = backend_factory("rds")(rds_source(w), settings(session, clock, run_id=run, restore_poll=policy))
                    out = drive(b, clock)
                    assert out.error is None, out.error
                    mark = next(m for m in out.marks if m.name == "instance-available")
                    at = datetime.fromisoformat(mark.at.replace("Z", "+00:00"))
                    error = abs((at - fakes.ready_at[b.instance_id]).total_seconds())
                    got[label].append((fakes.count("DescribeDBInstances"), error, mark.precision_ms / 1000))
            for label, xs in got.items():
                errs = sorted(x[1] for x in xs)
                rows.append((name, label, sum(x[0] for x in xs) / len(xs), errs[len(errs) // 2],
                             errs[max(0, int(0.95 * len(errs)) - 1)], errs[-1], max(x[2] for x in xs)))  # fmt: skip
    return rows


def concurrent(drills: int = 20, throttle: float = 0.2) -> dict[str, Any]:
    with mock_aws():
        base = boto3.Session(region_name=REGION)
        w = make_world(base)

        def run(i: int) -> tuple[Any, int, int, float]:
            session = boto3.Session(region_name=REGION)
            clock = FakeClock()
            fakes = Fakes(
                clock, restore_seconds=3600 + 60 * i, modify_seconds=90, throttle_rate=throttle, rng=random.Random(i)
            ).install(session)
            out = drive(backend_factory("rds")(rds_source(w), settings(session, clock, run_id=f"conc-{i}")), clock)
            return out, len(fakes.calls), fakes.throttled, clock.monotonic_ns() / 1e9

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=drills) as pool:
            results = list(pool.map(run, range(drills)))
        wall = time.perf_counter() - t0
        return {
            "completed": sum(1 for r in results if r[0].error is None),
            "failed": [str(r[0].error) for r in results if r[0].error is not None],
            "teardown_errors": sum(len(r[0].teardown_errors) for r in results),
            "leaked": drill_leftovers(base),
            "calls": sum(r[1] for r in results),
            "throttled": sum(r[2] for r in results),
            "simulated_drill_seconds_max": max(r[3] for r in results),
            "wall_seconds": wall,
        }


def main() -> None:
    if "--paced" in sys.argv:
        trials = int(sys.argv[sys.argv.index("--paced") + 1])
        for name, label, calls, p50, p95, worst, claimed in paced(trials):
            print(f"[paced] {name:<28} {label:<9} describes/drill {calls:5.1f}  error p50 {p50:5.1f}s "
                  f"p95 {p95:6.1f}s max {worst:6.1f}s  claimed max ±{claimed:5.1f}s")  # fmt: skip
        return
    for aurora in (False, True):
        calls, out = one_drill(aurora, 7200)
        name = "aurora" if aurora else "rds"
        describes = sum(v for k, v in calls.items() if k.startswith("Describe"))
        print(f"[{name}] 2 h restore: {sum(calls.values())} AWS calls ({describes} describes)")
        print("   " + ", ".join(f"{k}={v}" for k, v in calls.most_common()))
        print("   marks: " + ", ".join(f"{m.name}@{m.at} ±{m.precision_ms}ms ({m.source})" for m in out.marks))
    worst, mean, claimed = mark_error()
    print(f"[accuracy] 30 drills of 1.5-2.5 h: instance-available error worst {worst:.1f}s, mean {mean:.1f}s; "
          f"worst claimed precision ±{claimed:.1f}s")  # fmt: skip
    res = concurrent()
    print(
        f"[concurrency] 20 drills, 20% throttled: completed {res['completed']}/20, failed {len(res['failed'])}, "
        f"teardown errors {res['teardown_errors']}, leaked {len(res['leaked'])}; {res['calls']} calls, "
        f"{res['throttled']} throttled; wall {res['wall_seconds']:.1f}s "
        f"(longest simulated drill {res['simulated_drill_seconds_max'] / 3600:.2f} h)"
    )
    for f in res["failed"]:
        print("   failed:", f)


if __name__ == "__main__":
    main()
