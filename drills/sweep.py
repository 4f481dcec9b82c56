"""Remove drill resources left behind by runs that crashed, or kept past their expiry.

Teardown runs at the end of every drill, but a runner can die (OOM, a lost
spot instance, Ctrl-C twice), and ``drill run --keep TTL`` leaves a passed
drill's database up on purpose. ``drill sweep`` is the safety net, in two parts.

**AWS** (:func:`drills.aws.sweep.sweep`): RDS instances and clusters, DB subnet groups and
security groups that carry the ``drill-`` prefix *and* a
``restore-drills:run-id`` tag are deleted when

* kept for inspection (``restore-drills:kept-at``): their own
  ``restore-drills:expires-at`` has passed. Nothing else decides: not
  ``--older-than``, which would keep a one-hour copy of production for six;
* otherwise: expired (``expires-at`` in the past) *and* old enough (created
  more than ``older_than`` ago, a guard for runs on other machines);
* and in both cases: not part of a live run (``is_live(run_id)``, answered by
  the journal), and no other resource of the same run is still kept.

Anything without the prefix and tag is never touched (the same
:class:`~drills.aws.deleter.Deleter` as teardown checks it again right
before deleting). Deletion order is instances, clusters, subnet groups,
security groups, because each depends on the one before.

**Local** (:func:`sweep_local`): runs in this machine's journals whose
outstanding resources are local (a restored server, the scratch directory)
are finished with the teardown of ``drill teardown RUN_ID`` once their kept
expiry (journaled ``expires_at``) has passed, or, for a crashed run, once it
started more than ``older_than`` ago. AWS resources are left to the tag rule.

Every removal is journaled into the run's own journal, so ``drill runs``
no longer lists what a sweep took, and says a sweep took it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from drills.aws.calls import parse_time
from drills.clock import Clock, iso
from drills.errors import DrillError
from drills.keep import SWEEP_EVENT, keep_state

__all__ = ["AWS_BACKENDS", "journal_removal", "summary", "sweep_local"]

log = structlog.get_logger("drills.sweep")

AWS_BACKENDS = frozenset({"rds", "aurora"})  # resources the tag-driven AWS sweep removes


def summary(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts per action, for the CLI's last line."""
    out: dict[str, int] = {}
    for r in records:
        out[str(r["action"])] = out.get(str(r["action"]), 0) + 1
    return out


# ----------------------------------------------------------------------------- this machine's journals


def journal_removal(record: Mapping[str, Any], clock: Clock, home: Path | None = None) -> bool:
    """Journal an AWS resource the sweep deleted into its run's journal, if this machine has it.

    Returns whether the run's journal listed it as outstanding (and now records it removed).
    """
    from drills.journal import Journal, read_events, state_home, summarize

    run_id = str(record["run_id"])
    path = (home or state_home()) / "runs" / run_id / "journal.jsonl"
    if "/" in run_id or run_id in ("", ".", "..") or not path.is_file():  # a tag is not a path
        return False
    outstanding = summarize(run_id, read_events(path)).outstanding
    match = next((r for r in outstanding if r.kind == record["kind"] and r.id == record["id"]), None)
    if match is None:
        return False
    try:
        journal = Journal.reopen(run_id, clock, home)
        try:
            journal.append(
                "resource_removed",
                resource=match.to_dict(),
                verified_at=iso(clock.now()),
                detail=f"drill sweep: {record.get('detail')}",
                by="sweep",
            )
        finally:
            journal.close()
    except (OSError, DrillError) as exc:  # the resource is gone either way; say the journal lags
        log.warning("sweep_not_journaled", run_id=run_id, kind=record["kind"], id=record["id"], error=str(exc))
        return False
    return True


def _local_expiry(run: Any, events: list[dict[str, Any]], older_than: timedelta) -> tuple[datetime | None, str]:
    """When a run's local leftovers may go, and why then."""
    state = keep_state(events)
    if state.kept and state.expires_at is not None:
        return state.expires_at, "kept for inspection until"
    started = parse_time(run.started_at)
    if started is None:
        return None, "no start time in its journal"
    return started + older_than, "older than --older-than at"


def sweep_local(
    older_than: timedelta,
    dry_run: bool,
    clock: Clock,
    *,
    home: Path | None = None,
    aws_records: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Finish this machine's runs whose leftovers expired; one record per outstanding resource.

    Kept resources go when their journaled ``expires_at`` has passed; leftovers of crashed or
    unfinished teardowns when the run started more than ``older_than`` ago. Removal is
    ``drill teardown RUN_ID``'s. Runs still live are kept. A run with AWS resources outstanding
    waits for the AWS sweep (``aws_records``, None when AWS was not swept): while it keeps one of
    them by its tags, or could not delete it, the run's local leftovers stay too; once the sweep
    deleted them (journaled) or no longer sees them, the run's teardown confirms the rest.
    """
    from drills.journal import list_runs, read_events, state_home

    seen = None if aws_records is None else {(str(r["kind"]), str(r["id"])): r for r in aws_records}
    root = (home or state_home()) / "runs"
    now = clock.now()
    records: list[dict[str, Any]] = []
    for run in list_runs(home):
        if not run.outstanding:
            continue
        path = root / run.run_id / "journal.jsonl"
        events = read_events(path)
        until, why = _local_expiry(run, events, older_than)
        kept = keep_state(events).kept
        base = {"scope": "local", "run_id": run.run_id, "expires_at": iso(until) if until else None, "kept": kept}
        records_of = [{**base, "kind": r.kind, "id": r.id} for r in run.outstanding]
        reason = "kept: its run is still live" if run.status == "running" else _aws_hold(run.outstanding, seen)
        if reason is None and until is None:
            reason = f"kept: {why}; remove it with `drill teardown {run.run_id}`"
        elif reason is None and until is not None and until > now:
            reason = f"kept: {why} {iso(until)}"
        if reason is not None or until is None:
            records += [{**rec, "action": "kept", "detail": reason} for rec in records_of]
            continue
        due = f"{why} {iso(until)}"
        if dry_run:
            records += [{**rec, "action": "would-delete", "detail": due} for rec in records_of]
            continue
        records += _finish_run(run.run_id, path, due, records_of, clock=clock, home=home)
    return records


def _aws_hold(outstanding: Sequence[Any], seen: Mapping[tuple[str, str], Mapping[str, Any]] | None) -> str | None:
    """Why a run's AWS resources hold it back, if they do."""
    aws = [r for r in outstanding if r.backend in AWS_BACKENDS]
    if not aws:
        return None
    if seen is None:
        return "kept: it has AWS resources, and AWS was not swept"
    for r in aws:
        record = seen.get((r.kind, r.id))
        if record is not None and record.get("action") in ("kept", "error"):
            return f"kept: the AWS sweep keeps its {r.kind} {r.id} ({record.get('detail')})"
    return None


def _finish_run(
    run_id: str, path: Path, due: str, records_of: list[dict[str, Any]], *, clock: Clock, home: Path | None
) -> list[dict[str, Any]]:
    """``drill teardown RUN_ID`` for a sweep, journaled as one; the journal then says what went."""
    from drills.cleanup import finish_teardown
    from drills.journal import Journal, read_events, summarize

    journal = Journal.reopen(run_id, clock, home)
    try:
        journal.append(SWEEP_EVENT, reason=due)
    finally:
        journal.close()
    error = ""
    try:
        finish_teardown(run_id, clock=clock, home=home)
    except DrillError as exc:  # what went is journaled; what is left is reported
        error = str(exc)
    left = {(r.kind, r.id) for r in summarize(run_id, read_events(path)).outstanding}
    out: list[dict[str, Any]] = []
    for rec in records_of:
        if (rec["kind"], rec["id"]) in left:
            out.append({**rec, "action": "error", "detail": error or "still outstanding after teardown"})
        else:
            out.append({**rec, "action": "deleted", "detail": f"expired ({due}); torn down"})
    return out
