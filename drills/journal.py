"""The durable run journal: one JSON line per event, fsync'd before acting.

The journal is the truth of a run. The machine appends a line *before* each
action (entering a state, creating a resource, tearing one down), so after a
crash or a SIGKILL ``drill teardown RUN_ID`` knows every resource that may
exist, and ``drill runs`` knows where each run stopped. Nothing secret is
ever written here: resources carry identifiers and paths, not credentials.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.clock import Clock, iso
from drills.errors import InputError
from drills.resources import Resource

__all__ = ["Journal", "RunSummary", "list_runs", "new_run_id", "read_events", "state_home", "summarize"]


def state_home() -> Path:
    """Where runs are journaled: $RESTORE_DRILLS_HOME, else $XDG_STATE_HOME/restore-drills."""
    env = os.environ.get("RESTORE_DRILLS_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "restore-drills"


def new_run_id(now: datetime) -> str:
    """Sortable by time, unique without coordination: 20261126T231500Z-1a2b3c."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class Journal:
    """Append-only JSON lines for one run."""

    def __init__(self, path: Path, run_id: str, clock: Clock) -> None:
        self.path = path
        self.run_id = run_id
        self._clock = clock
        self._seq = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._seq = sum(1 for _ in path.open("rb"))
        self._fh = path.open("a", encoding="utf-8")

    @classmethod
    def create(cls, run_id: str, clock: Clock, home: Path | None = None) -> Journal:
        return cls((home or state_home()) / "runs" / run_id / "journal.jsonl", run_id, clock)

    @classmethod
    def reopen(cls, run_id: str, clock: Clock, home: Path | None = None) -> Journal:
        path = (home or state_home()) / "runs" / run_id / "journal.jsonl"
        if not path.exists():
            raise InputError(f"no run {run_id!r} in {path.parent.parent}", hint="`drill runs` lists the runs")
        return cls(path, run_id, clock)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        record = {"seq": self._seq, "at": iso(self._clock.now()), "run_id": self.run_id, "event": event, **fields}
        self._fh.write(json.dumps(record, default=str, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return record

    def close(self) -> None:
        self._fh.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete lines; a torn last line (killed mid-write) is ignored."""
    events: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@dataclass
class RunSummary:
    run_id: str
    runbook: str = ""
    started_at: str = ""
    last_state: str = ""
    status: str = "unknown"  # running | finished | interrupted | crashed
    verdict: str | None = None
    pid: int | None = None
    evidence: str | None = None
    outstanding: list[Resource] = field(default_factory=list)
    kept: bool = False  # resources deliberately left for inspection (drill run --keep)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"drill" in cmd or b"pytest" in cmd or b"python" in cmd


def summarize(run_id: str, events: list[dict[str, Any]]) -> RunSummary:
    """Fold a run's events into where it stands and what it may have left behind."""
    s = RunSummary(run_id=run_id)
    created: dict[str, Resource] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "run_started":
            s.runbook = ev.get("runbook", {}).get("name", "")
            s.started_at = ev.get("at", "")
            s.pid = ev.get("pid")
            s.status = "running"
        elif kind == "state_entered":
            s.last_state = ev.get("state", "")
        elif kind == "resource_registered":
            r = Resource.from_dict(ev["resource"])
            created[f"{r.backend}/{r.kind}/{r.id}"] = r
        elif kind == "resource_removed":
            r = Resource.from_dict(ev["resource"])
            created.pop(f"{r.backend}/{r.kind}/{r.id}", None)
        elif kind == "resource_kept":  # incident mode: still ours to remove, with `drill teardown` or the sweeper
            s.kept = True
        elif kind == "evidence_written":
            s.evidence = ev.get("path")
        elif kind == "run_finished":
            s.status = "interrupted" if ev.get("interrupted") else "finished"
            s.verdict = ev.get("verdict")
    if s.status == "running" and not _alive(s.pid):
        s.status = "crashed"
    s.outstanding = list(created.values())
    return s


def list_runs(home: Path | None = None) -> Iterator[RunSummary]:
    runs = (home or state_home()) / "runs"
    if not runs.is_dir():
        return
    for d in sorted(runs.iterdir()):
        j = d / "journal.jsonl"
        if j.exists():
            yield summarize(d.name, read_events(j))
