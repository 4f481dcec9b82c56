"""The numbers an evidence pack states, on histories whose answers are worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from drills.evidence.pack_html import fmt_duration
from drills.evidence.period import DrillRow, source_label, summarize_period

DAY = 86400


def at(month: int, day: int) -> datetime:
    return datetime(2026, month, day, 3, 0, tzinfo=UTC)


def row(
    run: str,
    when: datetime,
    verdict: str = "passed",
    *,
    runbook: str = "orders",
    every_s: int | None = 30 * DAY,
    seq: int | None = None,
    rto_ms: int = 600_000,
    source: str = "postgres-pitr base_backup=/b",
) -> DrillRow:
    return DrillRow(
        run_id=run,
        runbook=runbook,
        finished_at=when,
        verdict=verdict,
        rto_ms=rto_ms,
        rto_objective_ms=1_800_000,
        rpo_ms=4000,
        rpo_objective_ms=300_000,
        rto_met=True,
        rpo_met=True,
        phases_ms=(("restore", rto_ms // 2), ("validate", rto_ms // 2)),
        reasons=() if verdict == "passed" else ("finding_failed (smoke: orders): expected 200, got 54",),
        source=source,
        schedule_every_s=every_s,
        file=f"{run}.evidence.json",
        envelope_sha256="0" * 64,
        interrupted=False,
        seq=seq,
    )


def test_durations_read_as_people_write_them() -> None:
    assert fmt_duration(850) == "850 ms"
    assert fmt_duration(3000) == "3s"
    assert fmt_duration(120_000) == "2m"
    assert fmt_duration(723_456) == "12m 3.456s"
    assert fmt_duration(14_400_000) == "4h"
    assert fmt_duration(93_600_000) == "1d 2h"
    assert fmt_duration(None) == "–"


def test_a_36_day_gap_misses_a_30_day_cadence_even_with_three_passes() -> None:
    # 2026-09-01 .. 2026-12-01 is 91 days: floor(91 / 30) = 3 drills required.
    # Passes on 09-10, 10-15, 11-20: gaps 9d 0h, 35d, 36d, 10d 21h from the period edges (drills at 03:00).
    rows = [row("a", at(9, 10)), row("b", at(10, 15)), row("c", at(11, 20))]
    s = summarize_period(rows, datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    (rb,) = s.runbooks
    assert rb.required == 3
    assert rb.longest_gap_s == 36 * DAY
    assert rb.cadence_met is False


def test_a_failed_drill_does_not_count_towards_cadence() -> None:
    since, until = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    weekly = [row(f"w{i}", at(11, 1 + 7 * i), every_s=7 * DAY) for i in range(5)]  # 11-01 .. 11-29
    s = summarize_period(weekly, since, until)
    assert s.runbooks[0].cadence_met is True and s.runbooks[0].required == 4
    failed_third = [*weekly[:2], row("w2", at(11, 15), "failed", every_s=7 * DAY), *weekly[3:]]
    s = summarize_period(failed_third, since, until)
    assert s.runbooks[0].cadence_met is False
    assert s.runbooks[0].longest_gap_s == 14 * DAY
    assert s.runbooks[0].passed == 4 and s.runbooks[0].pass_rate == 0.8


def test_deviations_name_the_drill_that_remediated_them_or_stay_open() -> None:
    rows = [
        row("r1", at(11, 2), "failed"),
        row("r2", at(11, 3), "failed"),
        row("r3", at(11, 4)),
        row("r4", at(11, 20), "failed"),
    ]
    s = summarize_period(rows, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    fixes = {d.failed.run_id: (d.remediated_by.run_id if d.remediated_by else None) for d in s.deviations}
    assert fixes == {"r1": "r3", "r2": "r3", "r4": None}


def test_chain_positions_missing_inside_the_period_are_named() -> None:
    rows = [row("a", at(11, 2), seq=7), row("b", at(11, 9), seq=8), row("d", at(11, 23), seq=10)]
    s = summarize_period(rows, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert s.runbooks[0].missing_seq == (9,)


def test_records_outside_the_period_are_left_out_and_the_end_is_excluded() -> None:
    rows = [row("before", at(10, 31)), row("in", at(11, 15)), row("end", datetime(2026, 12, 1, tzinfo=UTC))]
    s = summarize_period(rows, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert [d.run_id for d in s.runbooks[0].drills] == ["in"]


def test_last_successful_restore_per_source() -> None:
    rows = [
        row("p1", at(11, 2), source="rds-snapshot db_instance_identifier=prod"),
        row("p2", at(11, 9), "failed", source="rds-snapshot db_instance_identifier=prod"),
        row("q1", at(11, 3), "failed", runbook="billing", source="mariadb-dump dump=/d.sql"),
    ]
    s = summarize_period(rows, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    last = {x.source: (x.last_passed.run_id if x.last_passed else None) for x in s.sources}
    assert last == {"rds-snapshot db_instance_identifier=prod": "p1", "mariadb-dump dump=/d.sql": None}


def test_source_label_keeps_what_names_the_backup_not_the_target() -> None:
    label = source_label(
        {
            "kind": "postgres-pitr",
            "base_backup": "/backups/base",
            "wal_archive": "/backups/wal",
            "target_time": "2026-11-30T00:00:00Z",
            "user": "postgres",
        }
    )
    assert label == "postgres-pitr base_backup=/backups/base wal_archive=/backups/wal"
