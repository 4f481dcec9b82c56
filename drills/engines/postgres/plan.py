"""The WAL archive a PITR target needs, and what recovery must reach: :func:`plan_pitr`.

Every segment from the base backup's start through the segment holding the first commit after
the target (through the end of the archive for ``latest``), read with page headers checked
(:mod:`drills.engines.postgres.wal`) and, with ``verify: full``, every record through
``pg_waldump``. Every defect raises :class:`~drills.errors.BackupDefect` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drills.clock import iso
from drills.engines.postgres.backup import (
    WAL_NAME,
    BaseBackup,
    format_lsn,
    parse_label,
    parse_lsn,
    parse_pg_time,
)
from drills.engines.postgres.wal import (
    SegmentDefect,
    WalFile,
    WalGeometry,
    geometry_of,
    scan_segment,
    segment_name,
    split_name,
)
from drills.errors import BackupDefect
from drills.osutil import readable_by

__all__ = ["Commit", "PitrPlan", "needed_wal", "parse_commits", "plan_facts", "plan_pitr"]


# ---------------------------------------------------------------- WAL archive


@dataclass(frozen=True)
class Commit:
    lsn: int
    at: datetime


@dataclass(frozen=True)
class PitrPlan:
    """What preflight found and what recovery must reach; the proof after promotion compares against it."""

    backup: BaseBackup
    geometry: WalGeometry
    target: datetime | None  # None: latest
    first_segment: str
    last_needed_segment: str
    segments_needed: int
    wal_bytes_needed: int
    backup_end: datetime
    backup_end_lsn: str | None
    expected_last_commit: Commit | None  # the newest commit recovery must replay (before the target, or the last)
    first_commit_after_target: Commit | None
    last_record_lsn: int | None  # latest: the newest complete record in the archive
    archive_last_segment: str
    facts: list[str] = field(default_factory=list)  # defects outside what the target needs, and other notes
    history_files: list[str] = field(default_factory=list)


def _list_archive(path: Path) -> tuple[list[WalFile], list[str]]:
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        raise BackupDefect(
            f"no WAL archive at {path}", hint="did archive_command ever run? check source.wal_archive"
        ) from None
    except OSError as exc:
        raise BackupDefect(f"{path}: the WAL archive cannot be listed ({exc.strerror})") from None
    wal: list[WalFile] = []
    other: list[str] = []
    for e in entries:
        try:
            st = e.stat()
        except OSError:
            continue
        if WAL_NAME.match(e.name) and e.is_file():
            wal.append(WalFile(e.name, 0, 0, st.st_size, st.st_mode, st.st_uid, st.st_gid))
        else:
            other.append(e.name)
    return wal, sorted(other)


COMMIT_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
LSN_RE = re.compile(r"lsn: ([0-9A-F]+/[0-9A-F]+),")


def parse_commits(waldump_output: str) -> list[Commit]:
    """Commit/abort records (recovery can stop only at those) in pg_waldump output, in WAL order."""
    return [Commit(parse_lsn(lsn), parse_pg_time(t)) for lsn, t in COMMIT_RE.findall(waldump_output)]


def _waldump(tool: str, archive: Path, first: str, last: str, *, transactions_only: bool) -> str:
    """pg_waldump over [first, last]; it ends with an error at the end of WAL, so only stdout counts."""
    args = [tool, "--path", str(archive), first, last]
    if transactions_only:
        args.insert(1, "--rmgr=Transaction")
    proc = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "TZ": "UTC", "LC_ALL": "C"}, timeout=3600, check=False
    )
    return proc.stdout


def _waldump_error(tool: str, archive: Path, first: str, last: str) -> tuple[int | None, str]:
    """``verify: full``: read every record (CRC included) of [first, last]; the LSN and text where it stopped."""
    proc = subprocess.run(
        [tool, "--quiet", "--path", str(archive), first, last],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        timeout=3600,
        check=False,
    )
    err = proc.stderr.strip().splitlines()
    m = re.search(r"error in WAL record at ([0-9A-F]+/[0-9A-F]+)", proc.stderr)
    return (parse_lsn(m.group(1)) if m else None), (err[-1] if err else "")


@dataclass(frozen=True)
class _Chain:
    """The archive's segments on the backup's timeline from its start: where they stop being usable."""

    files: dict[int, WalFile]
    good_end: int  # last segment number that is present and valid, contiguous from the start (start - 1: none)
    stop: str | None  # why the chain stops there (a gap or a defect), None at the plain end of the archive
    later: list[int]  # segment numbers present after the stop


def _scan_chain(
    archive: Path,
    *,
    files: list[WalFile],
    geo: WalGeometry,
    tli: int,
    start: int,
    server_ids: tuple[int, list[int]] | None,
) -> _Chain:
    by_number = {f.number: f for f in files if f.timeline == tli}
    buf = bytearray(geo.segment_size)
    n = start
    stop: str | None = None
    while n in by_number:
        f = by_number[n]
        if server_ids is not None and not readable_by(f.mode, f.uid, f.gid, server_ids[0], server_ids[1]):
            stop = str(SegmentDefect(f.name, "not readable by the user the server runs as"))
            break
        defect = scan_segment(str(archive / f.name), f, geo, buf)
        if defect is not None:
            stop = str(defect)
            break
        n += 1
    later = sorted(k for k in by_number if k > n or (k == n and stop is not None))
    if stop is None and later:
        stop = f"{segment_name(tli, n, geo.segments_per_id)}: missing (the archive has a gap)"
    return _Chain(by_number, n - 1, stop, later)


def plan_pitr(
    backup: BaseBackup,
    archive: Path,
    target: datetime | None,
    waldump: str,
    *,
    server_ids: tuple[int, list[int]] | None,
    full: bool = False,
) -> PitrPlan:
    """Verify the WAL the target needs and decide what recovery must reach. Raises BackupDefect."""
    listed, other = _list_archive(archive)
    if not listed:
        raise BackupDefect(f"{archive}: the WAL archive holds no WAL segments")
    tli = backup.timeline
    geo = _geometry(archive, backup, listed)
    files = [WalFile(f.name, *split_name(f.name, geo.segments_per_id), f.size, f.mode, f.uid, f.gid) for f in listed]
    _, start = split_name(backup.start_segment, geo.segments_per_id)
    history = [f"{tli:08X}.history"] if tli > 1 else []
    for h in history:
        if h not in other or not readable_by(*_mode(archive / h), *(server_ids or (0, []))):
            raise BackupDefect(f"{h}: timeline history file missing or unreadable; recovery on timeline {tli} needs it")
    chain = _scan_chain(archive, files=files, geo=geo, tli=tli, start=start, server_ids=server_ids)

    def name(n: int) -> str:
        return segment_name(tli, n, geo.segments_per_id)

    backup_end, end_lsn = _backup_end(archive, other, backup)
    if chain.good_end < start:
        raise BackupDefect(f"the WAL the base backup needs to become consistent is unusable: {chain.stop}")
    facts: list[str] = []
    if target is None:
        if chain.stop is not None:
            beyond = _commits_beyond(waldump, archive, chain, name)
            raise BackupDefect(
                f"WAL archive {archive} is damaged inside the range `latest` needs: {chain.stop}; "
                f"recovery would stop at the end of {name(chain.good_end)}"
                + (f" although the archive holds commits until {iso(beyond)}" if beyond else ""),
                hint="an incomplete archive restores silently to an earlier point: this is the drill's finding",
            )
        commits, last_lsn = _last_commits(waldump, archive, name, start, chain.good_end)
        plan_end, expected, after = chain.good_end, (commits[-1] if commits else None), None
    else:
        if target < backup_end:
            raise BackupDefect(
                f"target_time {iso(target)} is before the end of the base backup ({iso(backup_end)})",
                hint="choose a later target, or an older base backup",
            )
        found = _around_target(waldump, archive, name, start=start, end=chain.good_end, target=target)
        if found is None:
            last = _last_commits(waldump, archive, name, start, chain.good_end)[0]
            newest = iso(last[-1].at) if last else "none found"
            why = f"; the usable WAL ends at {name(chain.good_end)}: {chain.stop}" if chain.stop else ""
            raise BackupDefect(
                f"target_time {iso(target)} is not before any archived commit "
                f"(the newest usable one is {newest}){why}; "
                "recovery could not prove it reached the target",
                hint="choose an earlier target, `latest`, or archive the WAL after the target",
            )
        expected, after = found
        plan_end = after.lsn // geo.segment_size
        last_lsn = None
        if chain.stop is not None:
            facts.append(f"not needed for this target, outside the restorable range: {chain.stop}")
    if full:
        _verify_records(waldump, archive, name(start), name(plan_end), after.lsn if after else last_lsn)
    needed = plan_end - start + 1
    if chain.later and target is not None:
        facts.append(
            f"{len(chain.later)} segment(s) after the stop are unreachable: "
            f"{name(chain.later[0])}..{name(chain.later[-1])}"
        )
    return PitrPlan(
        backup=backup,
        geometry=geo,
        target=target,
        first_segment=name(start),
        last_needed_segment=name(plan_end),
        segments_needed=needed,
        wal_bytes_needed=needed * geo.segment_size,
        backup_end=backup_end,
        backup_end_lsn=end_lsn,
        expected_last_commit=expected,
        first_commit_after_target=after,
        last_record_lsn=last_lsn,
        archive_last_segment=max(files, key=lambda f: (f.timeline, f.number)).name,
        facts=facts,
        history_files=history,
    )


def _mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_mode, st.st_uid, st.st_gid


def _geometry(archive: Path, backup: BaseBackup, listed: list[WalFile]) -> WalGeometry:
    """Segment size and page size from the backup's first segment's long header, checked against the cluster."""
    first = archive / backup.start_segment
    try:
        with first.open("rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise BackupDefect(
            f"{backup.start_segment}: missing: the base backup starts in it, recovery cannot begin",
            hint="recovery cannot replay past a gap; check archive_command on the source",
        ) from None
    except OSError as exc:
        raise BackupDefect(f"{backup.start_segment}: cannot be read ({exc.strerror})") from None
    geo = geometry_of(head, backup.pg_major, backup.system_identifier)
    if isinstance(geo, SegmentDefect):
        raise BackupDefect(f"{backup.start_segment}: {geo.problem}")
    return geo


def _backup_end(archive: Path, other: list[str], backup: BaseBackup) -> tuple[datetime, str | None]:
    """The backup's end, from the archive's ``.backup`` history file; its start time when there is none."""
    for n in other:
        if n.startswith(backup.start_segment) and n.endswith(".backup"):
            with contextlib.suppress(OSError, KeyError, ValueError):
                info = parse_label((archive / n).read_text())
                if info.get("LABEL") == backup.label.get("LABEL") and "STOP TIME" in info:
                    return parse_pg_time(info["STOP TIME"]), info.get("STOP WAL LOCATION", "").split(" ")[0] or None
    return backup.start_time, None


def _last_commits(
    waldump: str, archive: Path, name: Callable[[int], str], start: int, end: int
) -> tuple[list[Commit], int | None]:
    """Commits of the newest segments that hold any (walking back), and the newest record's LSN."""
    last_lsn = None
    tail = _waldump(waldump, archive, name(end), name(end), transactions_only=False)
    lsns = LSN_RE.findall(tail)
    if lsns:
        last_lsn = parse_lsn(lsns[-1])
    commits = parse_commits(tail)
    n = end - 1
    while not commits and n >= start:
        commits = parse_commits(_waldump(waldump, archive, name(n), name(n), transactions_only=True))
        n -= 1
    return commits, last_lsn


def _around_target(
    waldump: str, archive: Path, name: Callable[[int], str], *, start: int, end: int, target: datetime
) -> tuple[Commit | None, Commit] | None:
    """(newest commit recovery must replay, first commit after the target), walking back from ``end``.

    Recovery stops before the first commit (in WAL order) whose time is after the target; the
    commit before it in WAL order is the last one it replays.
    """
    seen: list[Commit] = []
    n = end
    while n >= start:
        seg = parse_commits(_waldump(waldump, archive, name(n), name(n), transactions_only=True))
        seen = seg + seen
        if any(c.at <= target for c in seg):
            break
        n -= 1
    after_i = next((i for i, c in enumerate(seen) if c.at > target), None)
    if after_i is None:
        return None
    return (seen[after_i - 1] if after_i > 0 else None), seen[after_i]


def _commits_beyond(waldump: str, archive: Path, chain: _Chain, name: Callable[[int], str]) -> datetime | None:
    if not chain.later:
        return None
    commits = parse_commits(
        _waldump(waldump, archive, name(chain.later[-1]), name(chain.later[-1]), transactions_only=True)
    )
    return commits[-1].at if commits else None


def _verify_records(waldump: str, archive: Path, first: str, last: str, required_lsn: int | None) -> None:
    """``verify: full``: every record up to the one recovery must reach reads back intact (CRCs included)."""
    at, text = _waldump_error(waldump, archive, first, last)
    if at is not None and required_lsn is not None and at <= required_lsn:
        raise BackupDefect(
            f"WAL record at {format_lsn(at)} is damaged ({text}); recovery would stop there, "
            f"before {format_lsn(required_lsn)}"
        )


def plan_facts(plan: PitrPlan) -> dict[str, Any]:
    """What preflight proved about the WAL, and what recovery must reach, for the evidence."""
    last = plan.expected_last_commit
    after = plan.first_commit_after_target
    return {
        "first_segment": plan.first_segment,
        "last_needed_segment": plan.last_needed_segment,
        "segments_verified": plan.segments_needed,
        "segment_size": plan.geometry.segment_size,
        "system_identifier": str(plan.geometry.system_identifier),
        "archive_last_segment": plan.archive_last_segment,
        "history_files": plan.history_files,
        "expected_last_commit": {"lsn": format_lsn(last.lsn), "at": iso(last.at)} if last else None,
        "first_commit_after_target": {"lsn": format_lsn(after.lsn), "at": iso(after.at)} if after else None,
        "last_record_lsn": format_lsn(plan.last_record_lsn) if plan.last_record_lsn is not None else None,
        "outside_needed_range": plan.facts,
    }


def needed_wal(p: PitrPlan) -> list[str]:
    """Segment and history file names recovery will ask for (what a private copy must hold)."""
    per = p.geometry.segments_per_id
    tli, first = split_name(p.first_segment, per)
    _, last = split_name(p.last_needed_segment, per)
    return [*p.history_files, *(segment_name(tli, n, per) for n in range(first, last + 1))]
