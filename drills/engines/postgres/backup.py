"""Reading and verifying a PostgreSQL base backup and WAL archive without starting anything.

Preflight checks exactly what the requested target needs, no more and no less: the base backup
(against its ``backup_manifest`` when it has one), every WAL segment from the backup's start
through the segment holding the first commit after the target (through the end of the archive
for ``latest``), each readable by the server's user and with valid page headers
(:mod:`drills.engines.postgres.wal`), and the timeline history the backup's timeline needs. It also
decides what recovery must reach, so that after promotion the drill can prove it did
(:class:`~drills.engines.postgres.plan.PitrPlan`). Every defect raises
:class:`~drills.errors.BackupDefect` naming the file.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from drills.errors import BackupDefect

__all__ = [
    "BaseBackup",
    "inspect_base_backup",
    "parse_label",
    "parse_pg_time",
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


def listed(items: list[str]) -> str:
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
            raise BackupDefect(f"base backup {backup.path} does not match its manifest: {listed(errors)}")
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
        raise BackupDefect(f"base backup {backup.tar_path} does not match its manifest: {listed(problems)}")
    return {"method": "tar members against backup_manifest checksums", "files_checked": len(seen)}


def _feed(h: Any, fh: IO[bytes]) -> None:
    while chunk := fh.read(1 << 20):
        h.update(chunk)
