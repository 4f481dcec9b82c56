"""A ``mariadb-backup`` backup with its binlogs, or a ``mariadb-dump`` file, checked without a server.

What preflight and ``drill validate`` run before anything starts. Everything wrong with the
backup itself is a :class:`~drills.errors.BackupDefect` (a failed drill, exit 1, with
evidence): a backup directory that is not there because last night's backup never ran, a
backup that did not finish, missing coordinates, a file nobody can read, a gapped or damaged
binlog chain (:mod:`drills.engines.mariadb.binlog`), a target the backup does not hold, a dump
cut short. What this tool cannot do (an incremental backup) stays a
:class:`~drills.errors.PreflightError` (exit 2).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.clock import iso, iso_epoch
from drills.engines.mariadb.binlog import inspect_chain
from drills.engines.mariadb.declaration import MariadbDumpSource, MariadbPitrSource
from drills.engines.mariadb.plan import ReplayPlan, plan_replay
from drills.engines.mariadb.server import MariaBinaries, find_maria_binaries, run_as_for_mariadb
from drills.errors import BackupDefect, PreflightError
from drills.osutil import RunAs

__all__ = [
    "BackupInfo",
    "DumpInfo",
    "DumpPrepared",
    "PitrPrepared",
    "check_backup",
    "inspect_backup",
    "inspect_dump",
    "inspect_pitr",
    "reader_for",
    "tool_pass",
    "utc_env",
]

NO_BACKUP_HINT = "did last night's backup run? check the backup job and where it writes"


@dataclass(frozen=True)
class BackupInfo:
    """What a ``mariadb-backup --backup`` target directory says about itself."""

    path: Path
    start_file: str
    start_position: int
    gtid: str | None
    end: datetime
    end_basis: str
    files: int
    size_bytes: int

    def facts(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "end_time": iso(self.end),
            "end_time_basis": self.end_basis,
            "binlog_file": self.start_file,
            "binlog_position": self.start_position,
            "gtid": self.gtid,
            "files": self.files,
            "size_bytes": self.size_bytes,
        }


def reader_for(run_as: RunAs | None) -> tuple[str, int, list[int]] | None:
    """Who reads the binlogs: mariadb-binlog runs as the server's user when we are root (None: this process)."""
    return (run_as.name, run_as.uid, [run_as.gid]) if run_as else None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise BackupDefect(f"{path}: cannot read: {exc.strerror}") from None


def _binlog_coordinates(backup: Path) -> tuple[str, int, str | None]:
    for name in ("mariadb_backup_binlog_info", "xtrabackup_binlog_info"):
        p = backup / name
        if p.exists():
            text = _read(p)
            parts = text.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None
            raise BackupDefect(f"{p}: unreadable binlog coordinates: {text.strip()[:200]!r}")
    raise BackupDefect(
        f"{backup}: the backup recorded no binlog coordinates (xtrabackup_binlog_info), so no binlog can be "
        "replayed onto it",
        hint="the source must run with log_bin enabled when mariadb-backup --backup runs",
    )


def _backup_end(backup: Path) -> tuple[datetime, str]:
    """When the backup finished: ``end_time`` of xtrabackup_info, in this machine's local zone.

    mariadb-backup writes it as a naive local time; we assume the backup ran on a machine in
    the same zone as this one and say so in the evidence.
    """
    for name in ("xtrabackup_info", "mariadb_backup_info"):
        with contextlib.suppress(OSError, ValueError):
            for line in (backup / name).read_text(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "end_time":
                    local = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").astimezone()
                    return local.astimezone(UTC), f"{name} end_time read as local time ({local.tzname()})"
    mtime = (backup / "xtrabackup_checkpoints").stat().st_mtime
    return datetime.fromtimestamp(mtime, UTC), "mtime of xtrabackup_checkpoints (no end_time recorded)"


def _readable_tree(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``, each file opened for reading by this process (which copies them).

    The first file or directory that cannot be read is a defect, with a count of the others.
    """
    problems: list[str] = []
    files = size = 0

    def onerror(exc: OSError) -> None:
        problems.append(f"{exc.filename}: {exc.strerror}")

    for d, _dirs, names in os.walk(root, onerror=onerror):
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
                if not os.path.islink(p):
                    os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
            except OSError as exc:
                problems.append(f"{p}: {exc.strerror}")
                continue
            files += 1
            size += st.st_size
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BackupDefect(f"backup {root} is not readable: {problems[0]}{more}")
    return files, size


def _stat(path: Path) -> os.stat_result | None:
    """``stat`` of a backup path: None when it is not there, a BackupDefect when it cannot be looked at."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupDefect(f"{path}: cannot be read: {exc.strerror}") from None


def inspect_backup(backup: Path) -> BackupInfo:
    """The backup directory: there, finished, full, with binlog coordinates, every file readable."""
    st = _stat(backup)
    if st is None:
        raise BackupDefect(f"no backup at {backup} ({NO_BACKUP_HINT})")
    if not stat.S_ISDIR(st.st_mode):
        raise BackupDefect(f"{backup}: not a directory; a mariadb-backup backup is its --target-dir")
    checkpoints = backup / "xtrabackup_checkpoints"
    if _stat(checkpoints) is None:
        raise BackupDefect(
            f"{backup}: not a complete mariadb-backup backup (no xtrabackup_checkpoints): the backup did not "
            "finish, or this is not its --target-dir",
            hint=NO_BACKUP_HINT,
        )
    if re.search(r"backup_type\s*=\s*incremental", _read(checkpoints)):
        raise PreflightError(f"{backup}: an incremental backup; drills restore full backups only")
    start_file, position, gtid = _binlog_coordinates(backup)
    files, size = _readable_tree(backup)
    end, basis = _backup_end(backup)
    return BackupInfo(backup, start_file, position, gtid, end, basis, files, size)


def inspect_pitr(src: MariadbPitrSource, reader: tuple[str, int, list[int]] | None) -> tuple[BackupInfo, ReplayPlan]:
    """The backup and the binlog chain a PITR to ``src.target_time`` replays (see maria_binlog.plan_replay)."""
    info = inspect_backup(src.backup)
    target = src.target_time
    stop_ts = int(target.timestamp()) if isinstance(target, datetime) else None  # whole seconds, as binlogs stamp
    chain = inspect_chain(src.binlogs, info.start_file, info.start_position, stop_ts=stop_ts, reader=reader)
    plan = plan_replay(chain, stop_ts, int(info.end.timestamp()))
    return info, plan


def utc_env() -> dict[str, str]:
    """mariadb-binlog prints and parses datetimes in the process's local zone: pin it to UTC."""
    return {"TZ": "UTC", "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def as_user(run_as: RunAs | None) -> dict[str, Any]:
    """Popen arguments that run a tool as the server's user (nothing when we are not root)."""
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as else {}


def tool_pass(tool: str, binlogs: Path, plan: ReplayPlan, run_as: RunAs | None, timeout: float) -> dict[str, Any]:
    """``mariadb-binlog --verify-binlog-checksum`` over exactly what the replay will read, output discarded.

    The replay's own reader, dry: it decodes every event the scan only checksummed, so a binlog
    this mariadb-binlog cannot read (a newer server's events, a body that is wrong under a
    right checksum) fails here, before a server starts. One process per file, so a failure
    names its file; an "ERROR" on stderr counts even with exit 0 (mariadb-binlog treats an
    unreadable event of an in-use file as its end and says so only there).
    """
    started = time.monotonic()
    last = len(plan.files) - 1
    for i, name in enumerate(plan.files):
        args = [tool, "--no-defaults", "--verify-binlog-checksum"]
        if i == 0:
            args.append(f"--start-position={plan.start_position}")
        if i == last and plan.stop_ts is not None:
            args.append(f"--stop-datetime={datetime.fromtimestamp(plan.stop_ts, UTC):%Y-%m-%d %H:%M:%S}")
        elif i == last:
            args.append(f"--stop-position={plan.stop_position}")
        try:
            proc = subprocess.run(
                [*args, str(binlogs / name)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=utc_env(),
                cwd="/",
                timeout=timeout,
                check=False,
                **as_user(run_as),
            )
        except subprocess.TimeoutExpired:
            raise PreflightError(f"mariadb-binlog did not read {name} within {timeout:.0f}s") from None
        except OSError as exc:
            raise PreflightError(f"cannot run {tool}: {exc}") from None
        err = proc.stderr.decode(errors="replace").strip()
        errors = [ln for ln in err.splitlines() if "ERROR" in ln]
        if i == last and plan.partial_tail and all("'Event truncated'" in ln for ln in errors):
            errors = []  # the live copy's partial last event, after the stop position: expected, and not replayed
        if proc.returncode != 0 or errors:
            said = " | ".join(err.splitlines()[-3:])[-500:] or f"exit {proc.returncode}"
            raise BackupDefect(
                f"{name}: mariadb-binlog --verify-binlog-checksum cannot read it: {said}",
                hint="if a newer MariaDB wrote these binlogs, run the drill with a mariadb-binlog of that version",
            )
    return {"tool": tool, "files": len(plan.files), "seconds": round(time.monotonic() - started, 3)}


# ---------------------------------------------------------------- dumps

DUMP_HEADERS = (b"-- MariaDB dump", b"-- MySQL dump")
DUMP_TRAILER = b"-- Dump completed"


@dataclass(frozen=True)
class DumpInfo:
    path: Path
    gz: bool
    header: str
    size_bytes: int
    commented: bool  # written with comments: it must end with the "-- Dump completed" trailer

    def facts(self) -> dict[str, Any]:
        return {
            "dump": str(self.path),
            "compressed": "gzip" if self.gz else None,
            "size_bytes": self.size_bytes,
            "header": self.header[:200],
        }


def _tail(path: Path, n: int = 4096) -> bytes:
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - n))
        return fh.read()


def inspect_dump(path: Path) -> DumpInfo:
    """The dump file: there, readable, and (plain, with comments) ending with its completion trailer.

    A gzip'd dump is checked to the end while it loads (its trailer is only known after
    decompressing all of it); a cut there is a BackupDefect of the load.
    """
    st = _stat(path)
    if st is None:
        raise BackupDefect(f"no dump at {path} ({NO_BACKUP_HINT})")
    if not stat.S_ISREG(st.st_mode):
        raise BackupDefect(f"{path}: not a dump file")
    size = st.st_size
    if size == 0:
        raise BackupDefect(f"{path}: the dump is empty (0 bytes)", hint=NO_BACKUP_HINT)
    try:
        with path.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        opener: Any = gzip.open if gz else open
        with opener(path, "rb") as fh:
            head = [fh.readline(512) for _ in range(10)]
        tail = b"" if gz else _tail(path)
    except (OSError, EOFError) as exc:
        raise BackupDefect(f"{path}: cannot read the dump: {exc}") from None
    commented = any(line.startswith(DUMP_HEADERS) for line in head)
    first = next((line for line in head if line.startswith(DUMP_HEADERS)), head[0])
    if commented and not gz:
        last = tail.rstrip().rsplit(b"\n", 1)[-1]
        if not last.startswith(DUMP_TRAILER):
            raise BackupDefect(
                f"{path}: the dump is truncated: it has no '-- Dump completed' trailer "
                f"(it ends at {size} bytes with {last[-80:]!r})",
                hint="the dump was cut short while being written or copied",
            )
    return DumpInfo(path, gz, first.decode("utf-8", "replace").strip(), size, commented)


def check_source(
    source: MariadbPitrSource | MariadbDumpSource, run_as: RunAs | None, binlog_tool: str | None
) -> dict[str, Any]:
    """The offline checks of either kind, as facts; BackupDefect when the backup cannot be restored.

    Without ``binlog_tool`` (no MariaDB installed where ``drill validate`` runs) the binlogs are
    checked by the scan alone, and the facts say so.
    """
    if isinstance(source, MariadbDumpSource):
        return {"dump": inspect_dump(source.dump).facts()}
    info, plan = inspect_pitr(source, reader_for(run_as))
    facts: dict[str, Any] = {"backup": info.facts(), "binlog_chain": plan.facts()}
    if binlog_tool is None:
        facts["mariadb_binlog_check"] = "skipped: mariadb-binlog is not installed here"
    else:
        facts["mariadb_binlog_check"] = tool_pass(binlog_tool, source.binlogs, plan, run_as, timeout=3600)
    return facts


def pitr_recovery_point(info: BackupInfo, plan: ReplayPlan, target: datetime | str) -> dict[str, Any]:
    """The evidence's recovery point of a PITR: the backup, the binlog chain, the stop rule and the restorable range."""
    chain = plan.facts()
    return {
        "kind": "pitr",
        "backup": info.facts(),
        "binlogs": chain.pop("files"),
        "binlog_chain": chain,
        "target_time": iso(target) if isinstance(target, datetime) else "latest",
        "effective_stop": iso(datetime.fromtimestamp(plan.stop_ts, UTC))
        if plan.stop_ts is not None
        else f"end of the binlog chain ({plan.requested})",
        "stop_rule": "events stamped before effective_stop (binlog timestamps have 1 s resolution)"
        if plan.stop_ts is not None
        else "every event of the contiguous valid binlog chain",
        "requested": plan.requested.to_dict(),
        "earliest_restorable_time": iso(info.end),
        "latest_restorable_time": iso(datetime.fromtimestamp(plan.restorable_until.ts, UTC))
        if plan.restorable_until.ts is not None
        else None,
        "restorable_range_ends": plan.chain_end,
        # for latest, the archive's newest commit (results.archive_lag_ms / loss_in_archive_ms)
        "last_archived_commit": iso_epoch(plan.last_commit_ts) if plan.stop_ts is None else None,
    }


# ---------------------------------------------------------------- what preflight decides


@dataclass(frozen=True)
class PitrPrepared:
    """What preflight decided for a PITR; restore and await_ready act on it and on nothing else."""

    binaries: MariaBinaries
    plan: ReplayPlan  # the binlogs to replay, from where, and the exact event it must stop at


@dataclass(frozen=True)
class DumpPrepared:
    """What preflight decided for a dump load."""

    binaries: MariaBinaries
    dump: DumpInfo


def check_backup(source: MariadbPitrSource | MariadbDumpSource) -> dict[str, Any]:
    """What ``drill validate`` runs: the checks preflight makes that need no server (the mariadb-binlog
    pass over the binlogs only where it is installed; the facts say when it was skipped).

    Raises :class:`~drills.errors.BackupDefect` naming the defect (a missing backup directory,
    a gapped or damaged binlog chain, a target the backup does not hold, a truncated dump).
    """
    tool = None
    if isinstance(source, MariadbPitrSource):
        with contextlib.suppress(PreflightError):
            tool = find_maria_binaries(need=("binlog",)).tool("binlog")
    return check_source(source, run_as_for_mariadb(), tool)
