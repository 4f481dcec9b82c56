"""Every run leaves a record: a signed ``aborted`` record for a run that stopped without writing its own.

A drill killed with SIGKILL (or on a host that lost power) writes no evidence, so killing a failing
drill would hide the failure. The run journal survives the kill and knows what happened up to it:
the states entered and left (the timeline), every resource registered, what teardown removed, and
what is still out there. From it this module builds a record with ``results.verdict: aborted`` and
appends it to the runbook's chain like any other record. Two callers write it:

* ``drill teardown RUN_ID``, after finishing the crashed run's teardown (so the record says what
  that teardown removed), with the evidence settings the run journaled when it started;
* the next ``drill run`` of the same runbook, which finds the unfinished journal before it starts,
  signs with its own key into its own evidence directory (the same chain), and leaves the
  resources to ``drill teardown`` / ``drill sweep`` (the record lists them as outstanding).

A run gets at most one record: the journal notes ``aborted_evidence_written``, and an evidence
file already present for the run id (its own, or an aborted record written by the other caller)
is never replaced.
"""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import Any

import structlog

from drills import __version__
from drills.clock import Clock, iso
from drills.errors import DrillError
from drills.journal import Journal, list_runs, summarize
from drills.record import SCHEMA_VERSION

__all__ = ["ABORTED_EVENT", "aborted_predicate", "record_aborted", "record_aborted_from_journal", "unrecorded_crashes"]

log = structlog.get_logger("drills.aborted")

ABORTED_EVENT = "aborted_evidence_written"


def _first(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((e for e in events if e.get("event") == name), {})


def aborted_predicate(
    run_id: str, events: list[dict[str, Any]], *, recorded_by: str, now: str, host: str, initiated_by: str
) -> dict[str, Any]:
    """The record of an unfinished run, from its journal alone (pure: events in, predicate out)."""
    summary = summarize(run_id, events)
    started = _first(events, "run_started")
    runbook: dict[str, Any] = started["runbook"] if isinstance(started.get("runbook"), dict) else {}
    source: dict[str, Any] = started["source"] if isinstance(started.get("source"), dict) else {}
    timeline = [
        {k: v for k, v in e.items() if k not in ("seq", "at", "run_id", "event")}
        for e in events
        if e.get("event") == "state_exited"
    ]
    entered = [e.get("state") for e in events if e.get("event") == "state_entered"]
    exited = [e.get("state") for e in events if e.get("event") == "state_exited"]
    running_in = entered[-1] if len(entered) > len(exited) else None
    registered: dict[str, dict[str, Any]] = {}
    removed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for e in events:
        resource = e.get("resource") if isinstance(e.get("resource"), dict) else None
        if resource is None:
            continue
        key = f"{resource.get('backend')}/{resource.get('kind')}/{resource.get('id')}"
        if e.get("event") == "resource_registered":
            registered[key] = resource
        elif e.get("event") == "resource_removed":
            removed.append(
                {**resource, "deleted": True, "verified_at": e.get("verified_at"), "detail": e.get("detail")}
            )
        elif e.get("event") == "teardown_failed":
            failed.append({**resource, "deleted": False, "detail": e.get("error")})
    outstanding = [r.to_dict() for r in summary.outstanding]
    last_at = max((str(e.get("at")) for e in events if e.get("at")), default=None)
    where = f"in state {running_in}" if running_in else f"after state {summary.last_state or '(none)'}"
    reason = (
        f"the run stopped {where} without finishing or writing evidence (killed, or its host went down); "
        f"last journal event at {last_at}"
    )
    teardown_note = (
        f"{len(outstanding)} resource(s) not confirmed removed: run `drill teardown {run_id}`" if outstanding else None
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "drill": {
            "id": run_id,
            "type": source.get("kind"),
            "started_at": started.get("at"),
            "finished_at": now,
            "aborted_at": last_at,
            "initiated_by": initiated_by,
            "host": host,
            "executor": {"tool": "restore-drills", "version": __version__},
            "run_tool_version": started.get("tool_version"),
            "run_pid": started.get("pid"),
            "recorded_by": recorded_by,
        },
        "runbook": {k: runbook.get(k) for k in ("name", "sha256", "path")},
        "source": source,
        "timeline": timeline,
        "journal": {
            "states_entered": entered,
            "stopped_in_state": running_in,
            "last_state": summary.last_state or None,
            "events": len(events),
            "resources_registered": list(registered.values()),
        },
        "results": {
            "verdict": "aborted",
            "reasons": [reason] + ([teardown_note] if teardown_note else []),
            "achieved_rto_ms": None,
            "rto_met": False,
            "achieved_rpo_ms": None,
            "rpo_met": None,
        },
        "validation": {"passed": False, "findings": []},
        "deviations": [{"kind": "aborted", "state": running_in or summary.last_state or None, "message": reason}],
        "teardown": {
            "resources": removed + failed,
            "outstanding": outstanding,
            "all_deleted": not outstanding,
            "verified_at": max((str(r["verified_at"]) for r in removed if r.get("verified_at")), default=None),
        },
    }


def unrecorded_crashes(runbook_name: str, home: Path | None = None) -> list[str]:
    """Run ids of this runbook's runs that died without evidence and without an aborted record yet."""
    return [
        r.run_id for r in list_runs(home) if r.runbook == runbook_name and r.status == "crashed" and r.evidence is None
    ]


def record_aborted(
    run_id: str,
    *,
    out_dir: Path,
    signer: Any,
    trusted: list[Any],
    clock: Clock,
    home: Path | None = None,
    recorded_by: str,
) -> Path | None:
    """Write the aborted record of ``run_id`` into ``out_dir``'s chain; None when the run needs none
    (it finished, is still running, or was already recorded)."""
    from drills.evidence.statement import subject_for_bytes
    from drills.evidence.store import evidence_path
    from drills.history import append_drill

    journal = Journal.reopen(run_id, clock, home)
    try:
        events = journal.events()
        summary = summarize(run_id, events)
        if summary.status != "crashed" or summary.evidence is not None:
            return None
        if any(e.get("event") == ABORTED_EVENT for e in events) or evidence_path(out_dir, run_id).exists():
            return None
        journal.best_effort = True
        runbook = _first(events, "run_started").get("runbook") or {}
        name = str(runbook.get("name") or "")
        digest = str(runbook.get("sha256") or "")

        def complete(_past: list[Any], trail: dict[str, Any]) -> dict[str, Any]:
            now = iso(clock.now())
            facts = aborted_predicate(
                run_id,
                events,
                recorded_by=recorded_by,
                now=now,
                host=socket.gethostname(),
                initiated_by=getpass.getuser(),
            )
            return facts | trail

        subject = (
            {"name": f"runbook:{name}", "digest": {"sha256": digest}}
            if len(digest) == 64
            else subject_for_bytes(f"journal:{run_id}", json.dumps(events, sort_keys=True, default=str).encode())
        )
        path = append_drill(out_dir, name, trusted, signer, complete, run_id=run_id, subjects=[subject])
        journal.append(ABORTED_EVENT, path=str(path), recorded_by=recorded_by)
        log.warning("aborted_run_recorded", run_id=run_id, evidence=str(path), recorded_by=recorded_by)
        return path
    finally:
        journal.close()


def record_aborted_from_journal(run_id: str, clock: Clock, home: Path | None = None) -> Path | None:
    """For ``drill teardown``: sign with the key and into the directory the run journaled at its start."""
    from drills.evidence.keys import load_signer
    from drills.history import trusted_verifiers

    journal = Journal.reopen(run_id, clock, home)
    try:
        events = journal.events()
    finally:
        journal.close()
    ev = _first(events, "run_started").get("evidence")
    if not isinstance(ev, dict) or not ev.get("dir"):
        log.warning("aborted_run_not_recorded", run_id=run_id, reason="the journal names no evidence directory")
        return None
    if ev.get("kms_key_id"):
        from drills.aws.kms import KmsSigner

        signer: Any = KmsSigner(str(ev["kms_key_id"]))
    elif ev.get("signing_key"):
        signer = load_signer(Path(str(ev["signing_key"])))
    else:
        log.warning("aborted_run_not_recorded", run_id=run_id, reason="the journal names no signing key")
        return None
    trusted_keys = Path(str(ev["trusted_keys"])) if ev.get("trusted_keys") else None
    try:
        trusted = trusted_verifiers(signer, trusted_keys)
    except DrillError:
        trusted = trusted_verifiers(signer, None)
    return record_aborted(
        run_id,
        out_dir=Path(str(ev["dir"])),
        signer=signer,
        trusted=trusted,
        clock=clock,
        home=home,
        recorded_by="drill teardown",
    )


def record_crashes_of(
    runbook_name: str, *, out_dir: Path, signer: Any, trusted: list[Any], clock: Clock, home: Path | None = None
) -> list[Path]:
    """For the next ``drill run``: an aborted record for every unfinished run of this runbook. Never
    stops the new run: a journal it cannot read or a record it cannot write is logged and left for
    ``drill teardown``."""
    written: list[Path] = []
    try:
        crashed = unrecorded_crashes(runbook_name, home)
    except (DrillError, OSError) as exc:
        log.warning("aborted_runs_not_checked", runbook=runbook_name, error=str(exc))
        return written
    for run_id in crashed:
        try:
            path = record_aborted(
                run_id,
                out_dir=out_dir,
                signer=signer,
                trusted=trusted,
                clock=clock,
                home=home,
                recorded_by="next drill run of the runbook",
            )
        except (DrillError, OSError) as exc:
            log.warning("aborted_run_not_recorded", run_id=run_id, error=str(exc))
            continue
        if path is not None:
            written.append(path)
    return written
