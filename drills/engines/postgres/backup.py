"""Reading and verifying a PostgreSQL base backup and WAL archive without starting anything.

Preflight checks exactly what the requested target needs, no more and no less: the base backup
(against its ``backup_manifest`` when it has one), every WAL segment from the backup's start
through the segment holding the first commit after the target (through the end of the archive
for ``latest``), each readable by the server's user and with valid page headers
(:mod:`drills.engines.postgres.wal`), and the timeline history the backup's timeline needs. It also
decides what recovery must reach, so that after promotion the drill can prove it did
(:class:`PitrPlan`). Every defect raises :class:`~drills.errors.BackupDefect` naming the file.

Pure parsing (labels, manifests, pg_waldump output, the plan) is separate from the reads
and the pg_waldump calls, which are marked as such.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from drills.clock import iso
from drills.engines.postgres.wal import (
    SegmentDefect,
    WalFile,
    WalGeometry,
    geometry_of,
    readable_by,
    scan_segment,
    segment_name,
    split_name,
)
from drills.errors import BackupDefect

__all__ = [
    "BaseBackup",
    "Commit",
    "PitrPlan",
    "inspect_base_backup",
    "parse_label",
    "parse_pg_time",
    "plan_pitr",
    "verify_base_backup",
]

WAL_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
MAX_LISTED = 5  # defects named in one message; the rest are counted


def parse_label(text: str) -> dict[str, str]:
    """``KEY: value`` lines of a backup_label or a .backup history file."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def parse_pg_time(value: str) -> datetime:
    """PostgreSQL's ``2026-11-26 12:00:00 UTC`` (or with fractional seconds)."""
    v = value.replace(" UTC", "").replace(" GMT", "").strip()
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(v, fmt).replace(tzinfo=UTC)
    raise ValueError(f"unrecognized time {value!r}")


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(pos: int) -> str:
    return f"{pos >> 32:X}/{pos & 0xFFFFFFFF:X}"


def _listed(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


# ---------------------------------------------------------------- base backup


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    format: str  # "plain" | "tar" | "tar.gz"
    pg_major: int
    label: dict[str, str]
    size_bytes: int  # on disk
    expanded_bytes: int  # once restored (the tar members' sizes for tar formats)
    system_identifier: int
    manifest: Path | None

    @property
    def start_lsn(self) -> int:
        return parse_lsn(self.label.get("START WAL LOCATION", "0/0").split(" ")[0])

    @property
    def start_segment(self) -> str:
        m = re.search(r"\(file ([0-9A-F]{24})\)", self.label.get("START WAL LOCATION", ""))
        if not m:
            raise BackupDefect(f"{self.path}: backup_label has no START WAL LOCATION file")
        return m.group(1)

    @property
    def timeline(self) -> int:
        return int(self.label.get("START TIMELINE", "1"))

    @property
    def start_time(self) -> datetime:
        return parse_pg_time(self.label["START TIME"])

    @property
    def tar_path(self) -> Path:
        return self.path / f"base.{self.format}"


def _walk_size(path: Path) -> int:
    """Bytes under ``path``; the first unreadable directory is a defect, not a traceback."""
    total = 0

    def fail(exc: OSError) -> None:
        raise BackupDefect(
            f"{exc.filename}: cannot be read ({exc.strerror})", hint="the drill reads the backup as its invoking user"
        )

    for root, _dirs, files in os.walk(path, onerror=fail):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _sysid(raw: bytes | None, where: Path) -> int:
    """``system_identifier`` is the first field of ControlFileData in every version."""
    if raw is None or len(raw) < 8:
        raise BackupDefect(f"{where}: global/pg_control is missing or short")
    return int.from_bytes(raw[:8], "little")


def inspect_base_backup(path: Path) -> BaseBackup:
    """Recognise a pg_basebackup output (plain directory, or base.tar[.gz] in a directory)."""
    if not path.exists():
        raise BackupDefect(
            f"no base backup at {path}", hint="did the backup job run? point source.base_backup at its output"
        )
    try:
        return _inspect(path)
    except OSError as exc:
        raise BackupDefect(f"{exc.filename or path}: cannot be read ({exc.strerror})") from None


def _inspect(path: Path) -> BaseBackup:
    manifest = path / "backup_manifest" if (path / "backup_manifest").is_file() else None
    if (path / "PG_VERSION").exists():
        label_file = path / "backup_label"
        if not label_file.exists():
            raise BackupDefect(
                f"{path} has PG_VERSION but no backup_label: not a base backup (a copied data directory?)",
                hint="take one with `pg_basebackup -D DIR`",
            )
        major = int((path / "PG_VERSION").read_text().strip().split(".")[0])
        size = _walk_size(path)
        sysid = _sysid((path / "global" / "pg_control").read_bytes(), path)
        return BaseBackup(path, "plain", major, parse_label(label_file.read_text()), size, size, sysid, manifest)
    for name, fmt in (("base.tar", "tar"), ("base.tar.gz", "tar.gz")):
        tar_path = path / name
        if not tar_path.exists():
            continue
        try:
            with tarfile.open(tar_path) as tar:
                members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
                got = {
                    k: _read_member(tar, members.get(k)) for k in ("PG_VERSION", "backup_label", "global/pg_control")
                }
                if got["PG_VERSION"] is None or got["backup_label"] is None:
                    raise BackupDefect(f"{tar_path}: no PG_VERSION or backup_label inside: not a base backup")
                major = int(got["PG_VERSION"].decode().strip().split(".")[0])
                expanded = sum(m.size for m in members.values() if m.isfile())
                wal_tar = path / f"pg_wal.{fmt}"
                if wal_tar.exists():
                    with tarfile.open(wal_tar) as wt:
                        expanded += sum(m.size for m in wt.getmembers() if m.isfile())
                return BaseBackup(
                    path,
                    fmt,
                    major,
                    parse_label(got["backup_label"].decode()),
                    _walk_size(path),
                    expanded,
                    _sysid(got["global/pg_control"], tar_path),
                    manifest,
                )
        except (tarfile.TarError, EOFError, ValueError) as exc:
            raise BackupDefect(f"{tar_path}: not a readable base backup tar ({exc})") from None
    raise BackupDefect(
        f"{path}: no base backup found (expected PG_VERSION + backup_label, or base.tar[.gz])",
        hint="point source.base_backup at the directory pg_basebackup wrote",
    )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo | None) -> bytes | None:
    if member is None:
        return None
    fh = tar.extractfile(member)
    return fh.read() if fh is not None else None


def _checksum(algorithm: str) -> Any:
    if algorithm == "CRC32C":
        import crc32c  # a C implementation: a pure-Python CRC32C would be the slowest step of preflight

        return crc32c.CRC32CHash()
    if algorithm.startswith("SHA"):
        return hashlib.new(algorithm.lower().replace("-", ""))
    return None


def _digest_hex(h: Any, algorithm: str) -> str:
    if algorithm == "CRC32C":
        # pg_basebackup writes the CRC's bytes in memory (little-endian) order
        return bytes(reversed(h.digest())).hex()
    return str(h.hexdigest())


def _manifest_files(manifest: Path) -> dict[str, dict[str, Any]]:
    raw = manifest.read_bytes()
    at = raw.rfind(b'"Manifest-Checksum"')
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise BackupDefect(f"{manifest}: not a readable backup manifest ({exc})") from None
    if at > 0 and hashlib.sha256(raw[:at]).hexdigest() != doc.get("Manifest-Checksum"):
        raise BackupDefect(f"{manifest}: the manifest's own checksum does not match its contents (edited?)")
    return {f["Path"]: f for f in doc.get("Files", []) if "Path" in f}


def verify_base_backup(backup: BaseBackup, verifybackup: str | None) -> dict[str, Any]:
    """Check the base backup against its manifest; without one, only that it is readable.

    Plain backups go through ``pg_verifybackup`` (PG 13+). It cannot read tar backups before
    PG 18, so for those each tar member is checked against the manifest's size and checksum here.
    """
    if backup.manifest is None:
        return {"method": "label and readability (no backup_manifest)", "files_checked": None}
    if backup.format == "plain":
        if verifybackup is None:
            return {"method": "none: pg_verifybackup not found", "files_checked": None}
        proc = subprocess.run(
            [verifybackup, "--no-parse-wal", "--quiet", str(backup.path)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
            timeout=3600,
        )
        if proc.returncode != 0:
            errors = [ln.removeprefix("pg_verifybackup: ").removeprefix("error: ") for ln in proc.stderr.splitlines()]
            raise BackupDefect(f"base backup {backup.path} does not match its manifest: {_listed(errors)}")
        return {"method": "pg_verifybackup --no-parse-wal", "files_checked": len(_manifest_files(backup.manifest))}
    return _verify_tar(backup, _manifest_files(backup.manifest))


def _verify_tar(backup: BaseBackup, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    problems: list[str] = []
    seen: set[str] = set()
    with tarfile.open(backup.tar_path) as tar:
        for m in tar:
            name = m.name.removeprefix("./")
            if not m.isfile() or name.startswith("pg_wal/"):
                continue
            entry = files.get(name)
            if entry is None:
                problems.append(f"{name}: not in the manifest")
                continue
            seen.add(name)
            if m.size != entry.get("Size"):
                problems.append(f"{name}: {m.size} bytes, the manifest says {entry.get('Size')}")
                continue
            algo = str(entry.get("Checksum-Algorithm", "NONE"))
            h = _checksum(algo)
            fh = tar.extractfile(m)
            if h is None or fh is None:
                continue
            _feed(h, fh)
            if _digest_hex(h, algo) != str(entry.get("Checksum", "")).lower():
                problems.append(f"{name}: {algo} checksum mismatch")
    missing = sorted(set(files) - seen - {"backup_manifest"})
    problems += [f"{name}: in the manifest but not in {backup.tar_path.name}" for name in missing]
    if problems:
        raise BackupDefect(f"base backup {backup.tar_path} does not match its manifest: {_listed(problems)}")
    return {"method": "tar members against backup_manifest checksums", "files_checked": len(seen)}


def _feed(h: Any, fh: IO[bytes]) -> None:
    while chunk := fh.read(1 << 20):
        h.update(chunk)


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
