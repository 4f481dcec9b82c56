"""A world for fleets of RDS drills on moto: many sources, one real data plane, per-drill sessions.

Used by ``tests/functional/test_fleet.py`` and ``benchmarks/bench_fleet.py``.

* :class:`ScaledClock`: real time, sped up. Concurrent drills share one timeline (a
  :class:`~drills.clock.FakeClock` per thread would not, and one shared fake clock jumps whenever
  any drill sleeps), and the fake restore phases of :class:`aws_fakes.Fakes` take hours of drill
  time in seconds of real time. The budget is *not* scaled: it counts real seconds.
* Each source database has its own master user, so concurrent drills resetting "their" master
  password on the one local PostgreSQL do not race: :func:`watch_masters` applies the password a
  drill sends with ``ModifyDBInstance`` to the user RDS answered for that instance.
* :class:`CallLog` records every AWS call of every drill session with its real time, for the
  budget's proof (the most calls in any 1 s window).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aws_fakes import REGION, World, isolation
from dataplane import ROWS, PgPlane, set_master_password


class ScaledClock:
    """Real time multiplied by ``factor``: sleep(s) waits s/factor real seconds."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._t0 = time.monotonic_ns()
        self._start = datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic_ns(self) -> int:
        return int((time.monotonic_ns() - self._t0) * self.factor)

    def now(self) -> datetime:
        return self._start + timedelta(microseconds=self.monotonic_ns() // 1000)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.factor)


@dataclass
class CallLog:
    """Every AWS call of the sessions it watches: (real monotonic seconds, operation)."""

    calls: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, session: Any) -> None:
        def sent(event_name: str, **_: Any) -> None:
            with self._lock:
                self.calls.append((time.monotonic(), event_name.rsplit(".", 1)[-1]))

        session.events.register("before-send", sent)  # once per HTTP request, so retries count

    def densest(self) -> list[tuple[float, str]]:
        """The calls of the busiest 1 s window (to see what a budget overrun was made of)."""
        calls = sorted(self.calls)
        times = [t for t, _ in calls]
        best = max(range(len(times)), key=lambda i: bisect.bisect_right(times, times[i] + 1.0) - i, default=0)
        return calls[best : bisect.bisect_right(times, times[best] + 1.0)] if calls else []

    def max_per_second(self) -> int:
        """The most calls in any window of one second (closed at both ends)."""
        times = sorted(t for t, _ in self.calls)
        return max((bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def watch_masters(session: Any, plane: PgPlane) -> None:
    """Apply each accepted ``MasterUserPassword`` to the local role named like the instance's master user."""

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if "MasterUserPassword" in params:
            context["fleet_master_password"] = params["MasterUserPassword"]

    def apply(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        password = context.pop("fleet_master_password", None)
        if password and "Error" not in parsed:
            set_master_password(plane.server, parsed["DBInstance"]["MasterUsername"], password)

    session.events.register("before-parameter-build.rds.ModifyDBInstance", remember)
    session.events.register("after-call.rds.ModifyDBInstance", apply)


def add_sources(w: World, plane: PgPlane, count: int) -> list[tuple[str, str]]:
    """``count`` source instances, each with its own master user (a superuser role on the plane) and a snapshot."""
    out = []
    for i in range(count):
        user, ident = f"fleet_admin_{i}", f"fleet-src-{i}"
        set_master_password(plane.server, user, f"prod-password-{i}", create=True)
        w.rds.create_db_instance(
            DBInstanceIdentifier=ident,
            Engine="postgres",
            DBInstanceClass="db.t4g.micro",
            MasterUsername=user,
            MasterUserPassword=f"prod-password-{i}",
            AllocatedStorage=20,
            DeletionProtection=True,
            PubliclyAccessible=True,
        )
        w.rds.create_db_snapshot(DBSnapshotIdentifier=f"{ident}-snap", DBInstanceIdentifier=ident)
        out.append((user, f"{ident}-snap"))
    return out


def write_runbook(
    path: Path,
    w: World,
    plane: PgPlane,
    name: str,
    snapshot: str,
    evidence: Path,
    *,
    rows: int = ROWS,
    extra: dict[str, Any] | None = None,
) -> Path:
    """An rds-snapshot runbook reaching the plane through its tunnel; ``rows`` other than ROWS fails its check."""
    doc = {
        "name": name,
        "source": {
            "kind": "rds-snapshot",
            "region": REGION,
            "engine": "postgres",
            "snapshot": snapshot,
            "database": plane.database,
            "isolation": isolation(w),
        },
        "objectives": {"rto_seconds": 4 * 3600},
        "connect": {"host": "127.0.0.1", "port": plane.tunnel.port},
        "validators": {"row_counts": {"orders": {"equals": rows}}},
        "evidence": {"dir": str(evidence)},
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def drop_users(plane: PgPlane, users: list[str]) -> None:
    """Drop the sources' master users and the validators' roles they made (with what they were granted)."""
    from dataclasses import replace

    from psycopg import sql

    from validators.connect import connect

    conn: Any = connect(replace(plane.server.endpoint, database=plane.database))
    try:
        readers = [r for (r,) in conn.execute("select rolname from pg_roles where rolname like 'drill\\_reader\\_%'")]
        for role in [*readers, *users]:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
    finally:
        conn.close()
