"""`drill doctor`: what about the drills needs a human, for cron and CI.

A scheduled drill that silently stopped running is the failure nobody sees:
the last evidence says "passed", months ago. The doctor reads the runbooks
(schedule, objective), their verified records, the run journals and the
keyring, and names each thing that needs someone:

- ``never_run``: no verified record of the runbook;
- ``overdue``: the last passed drill is older than ``schedule.every``;
- ``failing``: the newest drills failed (the streak's length is given);
- ``rto_near_objective``: the newest passed drill used more than 80 % of the RTO objective;
- ``rto_breach_projected``: the record's own projection (``regression.projection``) crosses the
  objective within 90 days;
- ``unfinished_run``: a journal of a crashed or interrupted run still lists resources;
- ``kept_expired``: resources kept with ``--keep`` whose expiry passed (``drill sweep`` removes them);
- ``key_expiring``: a keyring key's ``not_after`` within 30 days (evidence signed after it fails);
- ``evidence_not_on_s3``: records of a runbook with ``evidence.s3`` not stored under lock;
- ``unverified_evidence``: files in a runbook's evidence directory that do not verify.

:func:`diagnose` is pure: the same facts and ``now`` give the same findings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = ["Finding", "KeyFact", "RecordFact", "RunFact", "RunbookFacts", "diagnose"]

RTO_WARN_FRACTION = 0.8
BREACH_HORIZON = timedelta(days=90)
KEY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class RecordFact:
    run_id: str
    finished_at: datetime
    verdict: str
    rto_ms: int | None
    rto_objective_ms: int | None
    projected_breach_at: datetime | None = None


@dataclass(frozen=True)
class RunbookFacts:
    name: str
    path: str
    every_s: int | None
    rto_objective_ms: int
    records: Sequence[RecordFact]  # verified, any order
    unverified: Sequence[str] = ()  # file names that did not verify
    not_on_s3: Sequence[str] = ()  # file names not stored under lock (runbooks with evidence.s3)


@dataclass(frozen=True)
class RunFact:
    run_id: str
    runbook: str
    status: str  # running | finished | interrupted | crashed
    outstanding: int
    kept_until: datetime | None


@dataclass(frozen=True)
class KeyFact:
    keyid: str
    not_after: datetime | None


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str  # a runbook, run id or key id
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "message": self.message, **self.detail}


def _ago(now: datetime, then: datetime) -> str:
    days = (now - then) / timedelta(days=1)
    return f"{days:.1f} days ago" if days >= 1 else f"{(now - then) / timedelta(hours=1):.1f} hours ago"


def _runbook(rb: RunbookFacts, now: datetime) -> list[Finding]:
    out: list[Finding] = []
    records = sorted(rb.records, key=lambda r: (r.finished_at, r.run_id))
    if not records:
        return [Finding("never_run", rb.name, f"{rb.name} ({rb.path}) has no verified drill record")]
    passed = [r for r in records if r.verdict == "passed"]
    last_pass = passed[-1] if passed else None
    if rb.every_s is not None:
        due = timedelta(seconds=rb.every_s)
        if last_pass is None or now - last_pass.finished_at > due:
            since = f"last passed {_ago(now, last_pass.finished_at)}" if last_pass else "never passed"
            out.append(
                Finding(
                    "overdue",
                    rb.name,
                    f"{rb.name} must pass every {rb.every_s // 3600}h; {since}",
                    {"last_passed_at": last_pass.finished_at.isoformat() if last_pass else None},
                )
            )
    streak = 0
    for r in reversed(records):
        if r.verdict == "passed":
            break
        streak += 1
    if streak:
        newest = records[-1]
        out.append(
            Finding(
                "failing",
                rb.name,
                f"{rb.name}: the last {streak} drill(s) failed, "
                f"newest {newest.run_id} ({_ago(now, newest.finished_at)})",
                {"streak": streak, "newest_failed": newest.run_id},
            )
        )
    if last_pass and last_pass.rto_ms is not None:
        objective = last_pass.rto_objective_ms or rb.rto_objective_ms
        if last_pass.rto_ms > RTO_WARN_FRACTION * objective:
            out.append(
                Finding(
                    "rto_near_objective",
                    rb.name,
                    f"{rb.name}: RTO {last_pass.rto_ms / 1000:.0f}s is {last_pass.rto_ms / objective:.0%} of the "
                    f"{objective / 1000:.0f}s objective ({last_pass.run_id})",
                    {"rto_ms": last_pass.rto_ms, "objective_ms": objective},
                )
            )
    newest = records[-1]
    if newest.projected_breach_at is not None and newest.projected_breach_at - now <= BREACH_HORIZON:
        out.append(
            Finding(
                "rto_breach_projected",
                rb.name,
                f"{rb.name}: RTO projected to cross its objective around {newest.projected_breach_at.date()}",
                {"projected_breach_at": newest.projected_breach_at.isoformat()},
            )
        )
    if rb.unverified:
        out.append(
            Finding(
                "unverified_evidence",
                rb.name,
                f"{rb.name}: {len(rb.unverified)} evidence file(s) do not verify: {', '.join(rb.unverified[:3])}",
                {"files": list(rb.unverified)},
            )
        )
    if rb.not_on_s3:
        out.append(
            Finding(
                "evidence_not_on_s3",
                rb.name,
                f"{rb.name}: {len(rb.not_on_s3)} record(s) not stored on S3 under lock: drill evidence push",
                {"files": list(rb.not_on_s3)},
            )
        )
    return out


def diagnose(
    runbooks: Iterable[RunbookFacts], runs: Iterable[RunFact], keys: Iterable[KeyFact], now: datetime
) -> list[Finding]:
    """Everything that needs a human, runbooks first, then runs, then keys."""
    out: list[Finding] = []
    for rb in sorted(runbooks, key=lambda r: r.name):
        out += _runbook(rb, now)
    for run in sorted(runs, key=lambda r: r.run_id):
        if run.kept_until is not None and run.outstanding and run.kept_until <= now:
            out.append(
                Finding(
                    "kept_expired",
                    run.run_id,
                    f"run {run.run_id} ({run.runbook}) kept {run.outstanding} resource(s) past "
                    f"{run.kept_until.isoformat()}: drill sweep",
                )
            )
        elif run.status in ("crashed", "interrupted") and run.outstanding and run.kept_until is None:
            out.append(
                Finding(
                    "unfinished_run",
                    run.run_id,
                    f"run {run.run_id} ({run.runbook}) {run.status} with {run.outstanding} resource(s) left: "
                    f"drill teardown {run.run_id}",
                )
            )
    for key in sorted(keys, key=lambda k: k.keyid):
        if key.not_after is not None and key.not_after - now <= KEY_WARNING:
            state = "expired" if key.not_after <= now else "expires"
            out.append(
                Finding(
                    "key_expiring",
                    key.keyid,
                    f"signing key {key.keyid} {state} {key.not_after.isoformat()}: rotate it (drill keygen, keyring)",
                )
            )
    return out
