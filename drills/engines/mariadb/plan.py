"""What a PITR target needs from the binlog chain: where replay starts, where it must stop, and why.

Pure logic over the scans of :mod:`drills.engines.mariadb.binlog`: no file is read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drills.engines.mariadb.binlog import Chain, Defect, FileScan, iso_ts
from drills.errors import BackupDefect

__all__ = ["Position", "ReplayPlan", "plan_replay"]


# ---------------------------------------------------------------- what a target needs


@dataclass(frozen=True)
class Position:
    """A place in the binlogs: file, byte offset, and the timestamp of the event that ends or starts there."""

    file: str
    pos: int
    ts: int | None

    def __str__(self) -> str:
        when = f" ({iso_ts(self.ts)})" if self.ts is not None else ""
        return f"{self.file}:{self.pos}{when}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "position": self.pos, "event_time": iso_ts(self.ts)}


@dataclass(frozen=True)
class ReplayPlan:
    """What mariadb-binlog is given and where it must get to.

    ``expect`` holds, per file replayed, the position its last emitted event must end at and
    the number of event header lines mariadb-binlog prints for it. ``stop_ts`` is the
    ``--stop-datetime`` of a time target; ``stop_position`` the ``--stop-position`` of
    ``latest`` (the end of the last whole event of the last file). ``partial_tail``: that last
    file is a live copy ending mid-event, which mariadb-binlog will try to read and report.
    """

    files: tuple[str, ...]
    start_position: int
    stop_ts: int | None
    stop_position: int | None
    requested: Position
    rule: str
    expect: tuple[tuple[str, int, int], ...]
    restorable_until: Position
    holds_until: Position | None
    chain_end: str
    not_needed: tuple[str, ...]
    scans: tuple[FileScan, ...]
    partial_tail: bool = False
    last_commit_ts: int | None = None  # the newest transaction the replay must apply (before the stop)

    def facts(self) -> dict[str, Any]:
        return {
            "files": [s.facts() for s in self.scans],
            "replayed_files": list(self.files),
            "requested": self.requested.to_dict() | {"rule": self.rule},
            "restorable_until": self.restorable_until.to_dict(),
            "holds_events_until": self.holds_until.to_dict() if self.holds_until else None,
            "chain_end": self.chain_end,
            "defects_not_needed": list(self.not_needed),
            "last_transaction_replayed_at": iso_ts(self.last_commit_ts),
        }


def _last_commit(files: Sequence[FileScan]) -> int | None:
    return next((s.last_commit_ts for s in reversed(files) if s.last_commit_ts is not None), None)


def _end_of(scan: FileScan) -> Position:
    return Position(scan.name, scan.end, scan.last_ts)


def _why_chain_ends(chain: Chain) -> str:
    """Why the restorable range ends where it does, in the words the evidence uses."""
    last = chain.prefix[-1]
    broken = chain.broken
    end_of_archive = broken is None or (broken.kind == "missing" and not chain.beyond)
    if not end_of_archive:
        assert broken is not None
        if broken.kind == "truncated" and broken.file == last.name and last.in_use and not chain.beyond:
            return (
                f"{last.name} was still open on the source (in-use flag) and ends with a partial event: "
                f"the chain ends at its last whole event, {last.end}"
            )
        return f"the chain breaks at {broken}"
    if last.rotate_to and last.closed:
        listed = " (named by the binlog index too)" if broken is not None and "listed in" in broken.problem else ""
        return (
            f"{last.name} ends with a Rotate to {last.rotate_to}, which is not here{listed}: the binlog the source "
            "was writing when the binlogs were copied"
        )
    if last.in_use:
        return f"{last.name} was still open on the source (in-use flag): the chain ends at its last whole event"
    return f"{last.name} ends with a Stop event (the source was shut down)"


def _latest_may_end_at(chain: Chain) -> bool:
    """For ``latest``, a break is the end of the range only where the source had written nothing more
    that we know of: files missing at the end of the sequence, or the partial last event of a file
    that was still open (a copy of the binlog being written)."""
    broken = chain.broken
    if broken is None:
        return True
    if chain.beyond:
        return False
    if broken.kind == "missing":
        return True
    last = chain.prefix[-1] if chain.prefix else None
    return broken.kind == "truncated" and last is not None and last.name == broken.file and last.in_use


def plan_replay(chain: Chain, target_ts: int | None, backup_end_ts: int) -> ReplayPlan:
    """What replaying to ``target_ts`` (whole UTC seconds; None: latest) needs, or a BackupDefect saying
    why the binlogs cannot give it."""
    if not chain.prefix:
        first = chain.broken or Defect(chain.start_file, "missing", "missing")
        raise BackupDefect(
            f"the binlog the backup's coordinates point into is not usable: {first}",
            hint="a point-in-time restore replays the binlogs from the backup's coordinates "
            f"({chain.start_file}:{chain.start_position})",
        )
    restorable = _end_of(chain.prefix[-1])
    newest = next((s for s in reversed(chain.scans) if s.last_ts is not None), None)
    holds = _end_of(newest) if newest else None
    rng = f"restorable range {iso_ts(backup_end_ts)} .. {iso_ts(restorable.ts) if restorable.ts else '(no events)'}"
    defects = [d for d in (chain.broken, *chain.later) if d is not None]
    common = {
        "start_position": chain.start_position,
        "restorable_until": restorable,
        "holds_until": holds,
        "chain_end": _why_chain_ends(chain),
        "scans": chain.scans,
    }
    if target_ts is None:
        if not _latest_may_end_at(chain):
            assert chain.broken is not None
            named = ", ".join(chain.beyond) if len(chain.beyond) <= 3 else f"{chain.beyond[0]} .. {chain.beyond[-1]}"
            more = f"; the backup holds {len(chain.beyond)} binlog(s) after it that replay cannot reach: {named}"
            raise BackupDefect(
                f"the binlog chain breaks at {chain.broken}{more if chain.beyond else ''}; "
                f"latest can only restore until {restorable}",
                hint="restore the damaged or missing binlog from the binlog archive",
            )
        files = chain.prefix
        return ReplayPlan(
            files=tuple(s.name for s in files),
            stop_ts=None,
            stop_position=restorable.pos,
            requested=restorable,
            rule="latest: the end of the last whole event of the contiguous valid binlog chain",
            expect=tuple((s.name, s.end, s.printed_before_stop) for s in files),
            not_needed=tuple(str(d) for d in defects),
            partial_tail=chain.broken is not None and chain.broken.kind == "truncated",
            last_commit_ts=_last_commit(files),
            **common,  # type: ignore[arg-type]
        )
    if target_ts < backup_end_ts:
        raise BackupDefect(
            f"target_time {iso_ts(target_ts)} is before the backup finished ({iso_ts(backup_end_ts)}); {rng}",
            hint="choose a later target, or an older backup",
        )
    at = next((i for i, s in enumerate(chain.prefix) if s.stop is not None), None)
    if at is None:
        if chain.broken is not None:
            raise BackupDefect(
                f"the binlog chain breaks before target_time {iso_ts(target_ts)}: {chain.broken}; {rng}",
                hint="replay cannot skip a binlog or a damaged event; restore the file from the binlog archive",
            )
        raise BackupDefect(
            f"target_time {iso_ts(target_ts)} is after the last event in the binlogs; {rng}",
            hint="choose an earlier target, `latest`, or copy the newer binlogs",
        )
    last = chain.prefix[at]
    stop = last.stop
    assert stop is not None
    if stop.pos == 4 and at > 0:
        # the first event at or after the target opens the next file: all of the file before it is replayed
        at, last = at - 1, chain.prefix[at - 1]
        requested = _end_of(last)
    else:
        requested = Position(last.name, stop.pos, stop.ts)
    files = chain.prefix[: at + 1]
    k = chain.order(requested.file)
    not_needed = tuple(
        str(d)
        for d in defects
        if chain.order(d.file) > k or (d.file == requested.file and (d.offset or 0) >= requested.pos)
    )
    return ReplayPlan(
        files=tuple(s.name for s in files),
        stop_ts=target_ts,
        stop_position=None,
        requested=requested,
        rule="a time target: the first event stamped at or after the target second (mariadb-binlog --stop-datetime)",
        expect=tuple((s.name, requested.pos if s is last else s.end, s.printed_before_stop) for s in files),
        not_needed=not_needed,
        last_commit_ts=_last_commit(files),
        **common,  # type: ignore[arg-type]
    )
