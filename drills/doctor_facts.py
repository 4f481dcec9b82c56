"""Gathering what `drill doctor` judges: runbooks, their verified records, run journals, keys.

All I/O lives here; :mod:`drills.doctor` only judges. Records count only
when they verify (against ``--key``, else the public half beside the
runbook's ``evidence.signing_key``, else the user's default key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.doctor import KeyFact, RecordFact, RunbookFacts, RunFact
from drills.errors import DrillError, InputError
from drills.evidence.keys import Verifier
from drills.record_model import DrillRecord

__all__ = ["gather"]

_SUFFIX = ".evidence.json"


def runbook_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml") and x.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} is neither a runbook file nor a directory of runbooks")
    if not out:
        raise InputError("no runbook to check", hint="drill doctor RUNBOOK.yaml… or a directory of runbooks")
    return out


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # a date (regression.projection) is UTC midnight


def _projection(predicate: dict[str, Any]) -> datetime | None:
    """When the record's own regression analysis projects the RTO to cross its objective, if it says."""
    projection = (predicate.get("regression") or {}).get("projection") or {}
    if not isinstance(projection, dict):
        return None
    for key in ("breach_at", "crosses_objective_at", "objective_crossed_at"):
        if (t := _time(projection.get(key))) is not None:
            return t
    return None


def _verifiers_for(loaded: Any, given: Sequence[Verifier] | None, home: Path | None) -> Sequence[Verifier]:
    from drills.api import default_key_path
    from drills.evidence.keys import load_public_key

    if given is not None:
        return given
    key = loaded.runbook.evidence.signing_key or default_key_path(home)
    pub = Path(key).with_suffix(".pub")
    if not pub.is_file():
        raise InputError(
            f"{loaded.path}: no public key to verify its records ({pub} does not exist)", hint="pass --key drill.pub"
        )
    return [load_public_key(pub)]


def _records(loaded: Any, verifiers: Sequence[Verifier]) -> tuple[list[RecordFact], list[str], list[Path]]:
    from drills.evidence.store import verify_evidence_bytes

    rb = loaded.runbook
    directory = Path(rb.evidence.dir)
    records: list[RecordFact] = []
    unverified: list[str] = []
    mine: list[Path] = []
    for path in sorted(directory.glob(f"*{_SUFFIX}")) if directory.is_dir() else []:
        try:
            statement = verify_evidence_bytes(path.read_bytes(), verifiers, source=path.name)
        except DrillError:
            unverified.append(path.name)
            continue
        p = statement.get("predicate") or {}
        try:
            rec = DrillRecord.parse(p)
        except DrillError:
            unverified.append(path.name)  # signed, but not a record this tool can read
            continue
        if rec.runbook.name != rb.name:
            continue
        if rec.finished is None:
            unverified.append(path.name)
            continue
        mine.append(path)
        records.append(
            RecordFact(
                run_id=rec.drill.id,
                finished_at=rec.finished,
                verdict=rec.results.verdict,
                rto_ms=rec.results.achieved_rto_ms,
                rto_objective_ms=rec.results.rto_objective_ms,
                projected_breach_at=_projection(p),
            )
        )
    return records, unverified, mine


def gather(
    paths: Sequence[Path], given: Sequence[Verifier] | None, home: Path | None = None
) -> tuple[list[RunbookFacts], list[RunFact], list[KeyFact]]:
    from drills.evidence.s3 import pending_runs
    from drills.journal import list_runs, read_events, state_home
    from drills.keep import keep_state
    from drills.runbook import load_runbook

    facts: list[RunbookFacts] = []
    for file in runbook_files(paths):
        loaded = load_runbook(file, check_paths=False)
        rb = loaded.runbook
        records, unverified, mine = _records(loaded, _verifiers_for(loaded, given, home))
        not_on_s3 = [p.name for p in pending_runs(Path(rb.evidence.dir)) if p in mine] if rb.evidence.s3 else []
        facts.append(
            RunbookFacts(
                name=rb.name,
                path=str(file),
                every_s=rb.schedule.every_seconds if rb.schedule else None,
                rto_objective_ms=rb.objectives.rto_seconds * 1000,
                records=records,
                unverified=unverified,
                not_on_s3=not_on_s3,
            )
        )
    runs: list[RunFact] = []
    root = (home or state_home()) / "runs"
    for r in list_runs(home):
        journal = root / r.run_id / "journal.jsonl"
        kept = keep_state(read_events(journal)).expires_at if journal.is_file() else None
        runs.append(RunFact(r.run_id, r.runbook, r.status, len(r.outstanding), kept if r.kept else None))
    keys = [KeyFact(v.keyid, v.not_after) for v in given or []]
    return facts, runs, keys
