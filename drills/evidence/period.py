"""What a period of verified drill records says, per runbook: the numbers an evidence pack shows.

Pure functions over statements that already verified (the pack refuses the
rest before they get here), so the same records always give the same
summary: an auditor's copy of the tool re-renders a pack and must get the
same report. Times are the records' own (``drill.finished_at``), never the
clock of whoever builds the pack.

Cadence is judged from the runbook's ``schedule.every`` as recorded in each
drill: the period holds ``floor(period / every)`` required drills, and the
cadence holds only when no gap between passed drills (counting from the
period's start and to its end) is longer than ``every``. A failed drill does
not count towards cadence: a control that requires restores to be tested
needs restores that worked.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drills.record_model import DrillRecord

__all__ = [
    "Deviation",
    "DrillRow",
    "PeriodSummary",
    "RunbookSummary",
    "SourceLastRestore",
    "parse_time",
    "row_of",
    "source_label",
    "summarize_period",
]

# source fields that name *what* is backed up (not how this drill read it, nor its target)
_IDENTIFYING = ("backup", "archive", "snapshot", "instance", "cluster", "dump", "binlog", "repo", "stanza", "server")


def parse_time(text: str) -> datetime:
    """An ISO 8601 UTC time as records write it (``...Z``), as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def source_label(source: Mapping[str, Any] | None) -> str:
    """One line naming the backup a drill restored: its kind and identifying fields, sorted by name."""
    if not source:
        return "unknown source"
    kind = str(source.get("kind", "unknown"))
    ids = [
        f"{k}={v}"
        for k, v in sorted(source.items())
        if k != "kind" and isinstance(v, str | int) and any(w in k for w in _IDENTIFYING)
    ]
    return f"{kind} " + " ".join(ids) if ids else kind


@dataclass(frozen=True)
class DrillRow:
    """One verified drill, as the pack shows it."""

    run_id: str
    runbook: str
    finished_at: datetime
    verdict: str
    rto_ms: int | None
    rto_objective_ms: int | None
    rpo_ms: int | None
    rpo_objective_ms: int | None
    rto_met: bool | None
    rpo_met: bool | None
    phases_ms: tuple[tuple[str, int], ...]  # in run order
    reasons: tuple[str, ...]
    source: str
    schedule_every_s: int | None
    file: str
    envelope_sha256: str
    interrupted: bool
    seq: int | None = None  # position in the runbook's evidence chain


def _reason_text(reason: object) -> str:
    if isinstance(reason, Mapping):
        kind, msg = reason.get("kind"), reason.get("message")
        check = reason.get("check")
        head = f"{kind} ({check})" if check else str(kind)
        return f"{head}: {msg}" if msg else head
    return str(reason)


def row_of(statement: Mapping[str, Any], *, file: str, envelope_sha256: str) -> DrillRow:
    """The row of one verified statement; a record that does not fit its schema is an EvidenceError."""
    rec = DrillRecord.parse(statement.get("predicate"))
    res = rec.results
    return DrillRow(
        run_id=rec.drill.id,
        runbook=rec.runbook.name,
        finished_at=parse_time(rec.drill.finished_at or rec.drill.started_at or ""),
        verdict=res.verdict,
        rto_ms=res.achieved_rto_ms,
        rto_objective_ms=res.rto_objective_ms,
        rpo_ms=res.achieved_rpo_ms,
        rpo_objective_ms=res.rpo_objective_ms,
        rto_met=res.rto_met if res.achieved_rto_ms is not None else None,
        rpo_met=res.rpo_met,
        phases_ms=tuple(res.rto_phases_ms.items()),
        reasons=tuple(
            _reason_text(r.model_dump(exclude_none=True) if not isinstance(r, str) else r) for r in res.reasons
        ),
        source=source_label(rec.source),
        schedule_every_s=rec.runbook.schedule_every_seconds,
        file=file,
        envelope_sha256=envelope_sha256,
        interrupted=rec.interrupted,
        seq=rec.chain.seq if rec.chain else None,
    )


@dataclass(frozen=True)
class Deviation:
    """A failed drill and what remediated it: the next passed drill of the same runbook, if any."""

    failed: DrillRow
    remediated_by: DrillRow | None


@dataclass(frozen=True)
class SourceLastRestore:
    source: str
    runbook: str
    last_passed: DrillRow | None


@dataclass(frozen=True)
class RunbookSummary:
    name: str
    drills: tuple[DrillRow, ...]  # oldest first
    required: int | None  # drills the schedule requires in the period; None without a schedule
    every_s: int | None
    longest_gap_s: int | None  # between passed drills, period edges included
    cadence_met: bool | None  # None without a schedule
    missing_seq: tuple[int, ...] = ()  # chain positions between the period's first and last record that are absent

    @property
    def passed(self) -> int:
        return sum(1 for d in self.drills if d.verdict == "passed")

    @property
    def pass_rate(self) -> float | None:
        return self.passed / len(self.drills) if self.drills else None

    @property
    def median_rto_ms(self) -> int | None:
        values = [d.rto_ms for d in self.drills if d.verdict == "passed" and d.rto_ms is not None]
        return int(statistics.median(values)) if values else None

    @property
    def worst_rto_ms(self) -> int | None:
        values = [d.rto_ms for d in self.drills if d.rto_ms is not None]
        return max(values) if values else None

    @property
    def worst_rpo_ms(self) -> int | None:
        values = [d.rpo_ms for d in self.drills if d.rpo_ms is not None]
        return max(values) if values else None

    @property
    def last_passed(self) -> DrillRow | None:
        passed = [d for d in self.drills if d.verdict == "passed"]
        return passed[-1] if passed else None


@dataclass(frozen=True)
class PeriodSummary:
    since: datetime
    until: datetime
    runbooks: tuple[RunbookSummary, ...]
    deviations: tuple[Deviation, ...]
    sources: tuple[SourceLastRestore, ...]
    unverified: tuple[tuple[str, str], ...] = field(default=())  # (file, why) for files that failed verification


def _cadence(drills: list[DrillRow], since: datetime, until: datetime) -> tuple[int | None, int | None, bool | None]:
    every = next((d.schedule_every_s for d in reversed(drills) if d.schedule_every_s), None)
    if every is None:
        return None, None, None
    period_s = (until - since).total_seconds()
    required = max(1, int(period_s // every))
    marks = [since, *(d.finished_at for d in drills if d.verdict == "passed"), until]
    gap = max(int((b - a).total_seconds()) for a, b in itertools.pairwise(marks))
    return required, gap, gap <= every


def summarize_period(
    rows: Iterable[DrillRow], since: datetime, until: datetime, unverified: Iterable[tuple[str, str]] = ()
) -> PeriodSummary:
    """Group the period's verified drills by runbook; cadence, deviations and last restore per source."""
    inside = sorted((r for r in rows if since <= r.finished_at < until), key=lambda r: (r.finished_at, r.run_id))
    by_runbook: dict[str, list[DrillRow]] = {}
    for r in inside:
        by_runbook.setdefault(r.runbook, []).append(r)
    summaries = []
    deviations = []
    for name in sorted(by_runbook):
        drills = by_runbook[name]
        required, gap, met = _cadence(drills, since, until)
        seqs = sorted({d.seq for d in drills if d.seq is not None})
        missing = tuple(sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))) if seqs else ()
        every = drills[-1].schedule_every_s
        summaries.append(RunbookSummary(name, tuple(drills), required, every, gap, met, missing))
        for i, d in enumerate(drills):
            if d.verdict != "passed":
                fix = next((later for later in drills[i + 1 :] if later.verdict == "passed"), None)
                deviations.append(Deviation(d, fix))
    last: dict[tuple[str, str], DrillRow | None] = {}
    for r in inside:
        key = (r.source, r.runbook)
        if r.verdict == "passed" or key not in last:
            last[key] = r if r.verdict == "passed" else last.get(key)
    sources = tuple(SourceLastRestore(s, rb, last[(s, rb)]) for s, rb in sorted(last))
    return PeriodSummary(since, until, tuple(summaries), tuple(deviations), sources, tuple(unverified))


def period_days(since: datetime, until: datetime) -> float:
    return (until - since) / timedelta(days=1)
