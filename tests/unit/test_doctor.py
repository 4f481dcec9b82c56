"""`drill doctor`'s judgement on facts whose answers are plain (pure: no files, fixed `now`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from drills.doctor import KeyFact, RecordFact, RunbookFacts, RunFact, diagnose

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = 86400


def rec(days_ago: float, verdict: str = "passed", rto_s: int = 600, run: str = "") -> RecordFact:
    return RecordFact(run or f"r{days_ago}", NOW - timedelta(days=days_ago), verdict, rto_s * 1000, 1_800_000)


def runbook(*records: RecordFact, every_days: int | None = 7, **kw: Any) -> RunbookFacts:
    return RunbookFacts(
        "orders", "runbooks/orders.yaml", every_days * DAY if every_days else None, 1_800_000, records, **kw
    )


def checks(*rbs: RunbookFacts, runs: tuple[RunFact, ...] = (), keys: tuple[KeyFact, ...] = ()) -> list[str]:
    return [f.check for f in diagnose(rbs, runs, keys, NOW)]


def test_a_healthy_weekly_runbook_needs_nobody() -> None:
    assert checks(runbook(rec(20), rec(13), rec(6))) == []


def test_never_run_and_overdue() -> None:
    assert checks(runbook()) == ["never_run"]
    findings = diagnose([runbook(rec(8))], [], [], NOW)
    assert [f.check for f in findings] == ["overdue"]
    assert "last passed 8.0 days ago" in findings[0].message
    assert checks(runbook(rec(8), every_days=None)) == []  # no schedule, no cadence to miss


def test_a_failing_streak_is_counted_from_the_newest_drill() -> None:
    findings = diagnose([runbook(rec(5), rec(3, "failed"), rec(1, "failed", run="newest"))], [], [], NOW)
    (failing,) = findings
    assert failing.check == "failing" and failing.detail == {"streak": 2, "newest_failed": "newest"}
    assert checks(runbook(rec(5, "failed"), rec(1))) == []  # remediated


def test_rto_above_80_percent_of_the_objective() -> None:
    assert checks(runbook(rec(1, rto_s=1440))) == []  # exactly 80 %
    assert checks(runbook(rec(1, rto_s=1441))) == ["rto_near_objective"]
    assert checks(runbook(rec(1, rto_s=2000), rec(0.5, "failed", rto_s=100))) == ["failing", "rto_near_objective"]


def test_a_projected_breach_within_90_days() -> None:
    soon = RecordFact("p", NOW - timedelta(days=1), "passed", 600_000, 1_800_000, NOW + timedelta(days=89))
    later = RecordFact("q", NOW - timedelta(days=1), "passed", 600_000, 1_800_000, NOW + timedelta(days=91))
    assert checks(runbook(soon)) == ["rto_breach_projected"]
    assert checks(runbook(later)) == []


def test_leftover_runs_kept_resources_and_keys() -> None:
    runs = (
        RunFact("crashed-1", "orders", "crashed", 2, None),
        RunFact("crashed-clean", "orders", "crashed", 0, None),
        RunFact("kept-old", "orders", "finished", 1, NOW - timedelta(hours=1)),
        RunFact("kept-new", "orders", "finished", 1, NOW + timedelta(hours=1)),
    )
    keys = (
        KeyFact("sha256:soon", NOW + timedelta(days=29)),
        KeyFact("sha256:later", NOW + timedelta(days=31)),
        KeyFact("sha256:forever", None),
    )
    findings = diagnose([], runs, keys, NOW)
    assert [(f.check, f.subject) for f in findings] == [
        ("unfinished_run", "crashed-1"),
        ("kept_expired", "kept-old"),
        ("key_expiring", "sha256:soon"),
    ]
    assert "drill teardown crashed-1" in findings[0].message and "drill sweep" in findings[1].message


def test_unverified_files_and_records_not_on_s3_are_named() -> None:
    rb = runbook(rec(1), unverified=["planted.evidence.json"], not_on_s3=["r1.evidence.json"])
    assert checks(rb) == ["unverified_evidence", "evidence_not_on_s3"]
