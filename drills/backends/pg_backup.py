"""Reading a PostgreSQL base backup and WAL archive without starting anything.

Pure parsing lives here (backup labels, backup history files, WAL file
names, pg_waldump output) so preflight can be unit-tested; the few reads of
files and the pg_waldump call are at the bottom.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drills.errors import PreflightError

__all__ = [
    "BaseBackup",
    "WalArchive",
    "inspect_base_backup",
    "inspect_wal_archive",
    "missing_segments",
    "newest_commit_in_archive",
    "parse_label",
]

WAL_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
SEGS_PER_XLOGID = 0x100  # 16 MiB segments, the default and what initdb gives unless told otherwise


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


def segment_number(name: str) -> tuple[int, int]:
    """(timeline, absolute segment number) of a WAL file name."""
    m = WAL_NAME.match(name)
    if not m:
        raise ValueError(f"not a WAL segment name: {name}")
    tli, log, seg = (int(g, 16) for g in m.groups())
    return tli, log * SEGS_PER_XLOGID + seg


def segment_name(tli: int, n: int) -> str:
    return f"{tli:08X}{n // SEGS_PER_XLOGID:08X}{n % SEGS_PER_XLOGID:08X}"


def missing_segments(names: list[str], start: str) -> list[str]:
    """Segments absent between the backup's start segment and the newest archived one."""
    tli, first = segment_number(start)
    have = {segment_number(n)[1] for n in names if WAL_NAME.match(n) and segment_number(n)[0] == tli}
    if not have:
        return [start]
    last = max(have)
    return [segment_name(tli, n) for n in range(first, last + 1) if n not in have]


COMMIT_RE = re.compile(r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def newest_commit_time(waldump_output: str) -> datetime | None:
    """The newest commit/abort timestamp in pg_waldump output (recovery can only stop at those)."""
    times = COMMIT_RE.findall(waldump_output)
    return max((parse_pg_time(t) for t in times), default=None)


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    format: str  # "plain" | "tar" | "tar.gz"
    pg_major: int
    label: dict[str, str]
    size_bytes: int

    @property
    def start_segment(self) -> str:
        m = re.search(r"\(file ([0-9A-F]{24})\)", self.label.get("START WAL LOCATION", ""))
        if not m:
            raise PreflightError(f"{self.path}: backup_label has no START WAL LOCATION file")
        return m.group(1)

    @property
    def start_time(self) -> datetime:
        return parse_pg_time(self.label["START TIME"])


@dataclass(frozen=True)
class WalArchive:
    path: Path
    segments: list[str]
    size_bytes: int
    stop_time: datetime | None  # backup end, from the .backup history file
    stop_lsn: str | None


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def inspect_base_backup(path: Path) -> BaseBackup:
    """Recognise a pg_basebackup output (plain directory, or base.tar[.gz] in a directory)."""
    if (path / "PG_VERSION").exists():
        label_file = path / "backup_label"
        if not label_file.exists():
            raise PreflightError(
                f"{path} has PG_VERSION but no backup_label: not a base backup (a copied data directory?)",
                hint="take one with `pg_basebackup -D DIR`",
            )
        major = int((path / "PG_VERSION").read_text().strip().split(".")[0])
        return BaseBackup(path, "plain", major, parse_label(label_file.read_text()), _dir_size(path))
    for name, fmt in (("base.tar", "tar"), ("base.tar.gz", "tar.gz")):
        tar_path = path / name if path.is_dir() else path
        if tar_path.name != name or not tar_path.exists():
            continue
        try:
            with tarfile.open(tar_path) as tar:
                version = tar.extractfile("PG_VERSION")
                label = tar.extractfile("backup_label")
                if version is None or label is None:
                    raise KeyError("PG_VERSION")
                major = int(version.read().decode().strip().split(".")[0])
                return BaseBackup(path, fmt, major, parse_label(label.read().decode()), _dir_size(path))
        except (tarfile.TarError, KeyError, OSError) as exc:
            raise PreflightError(f"{tar_path}: not a readable base backup tar ({exc})") from None
    raise PreflightError(
        f"{path}: no base backup found (expected PG_VERSION + backup_label, or base.tar[.gz])",
        hint="point source.base_backup at the directory pg_basebackup wrote",
    )


def inspect_wal_archive(path: Path, backup: BaseBackup) -> WalArchive:
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    segments = [n for n in names if WAL_NAME.match(n)]
    stop_time = stop_lsn = None
    start = backup.start_segment
    for n in names:
        if n.startswith(start) and n.endswith(".backup"):
            info = parse_label((path / n).read_text())
            if info.get("LABEL") == backup.label.get("LABEL") and "STOP TIME" in info:
                stop_time = parse_pg_time(info["STOP TIME"])
                stop_lsn = info.get("STOP WAL LOCATION", "").split(" ")[0] or None
    return WalArchive(path, segments, _dir_size(path), stop_time, stop_lsn)


def newest_commit_in_archive(waldump: str, archive: WalArchive, look_back: int = 4) -> datetime | None:
    """The newest commit in the archive, read from its last few segments with pg_waldump."""
    segs = archive.segments
    for back in range(1, min(look_back, len(segs)) + 1):
        first, last = segs[-back], segs[-1]
        proc = subprocess.run(
            [waldump, "--rmgr=Transaction", "--path", str(archive.path), first, last],
            capture_output=True,
            text=True,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
            timeout=120,
            check=False,
        )
        found = newest_commit_time(proc.stdout)
        if found is not None:
            return found
    return None
