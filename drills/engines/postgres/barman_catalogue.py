"""What Barman says about its catalogue, read from its JSON output and ``xlog.db``: pure, no I/O.

:mod:`drills.engines.postgres.barman` runs Barman and hands the text here: ``list-backups``,
``show-backup`` and ``check`` (``barman -f json``, as Barman 3.4 prints them), and the
server's ``xlog.db``. Which backup serves a target, and which ``barman check`` failures are
the catalogue's (exit 1) or the environment's (exit 2), is decided here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drills.clock import iso
from drills.errors import BackupDefect, PreflightError

__all__ = [
    "ENVIRONMENT_CHECKS",
    "REPOSITORY_CHECKS",
    "BarmanBackup",
    "choose_backup",
    "classify_check",
    "parse_list_backups",
    "parse_show_backup",
    "parse_xlogdb",
]

# `barman check` entries about the repository: a failure is the backup's (exit 1) ...
REPOSITORY_CHECKS = frozenset(
    {"systemid_coherence", "minimum_redundancy_requirements", "backup_maximum_age", "wal_maximum_age", "failed_backups"}
)
# ... or the environment's (exit 2); every other check is about reaching the source server
ENVIRONMENT_CHECKS = frozenset({"directories"})


# ------------------------------------------------------------------ pure: what Barman says


@dataclass(frozen=True)
class BarmanBackup:
    backup_id: str
    status: str
    begin: datetime
    end: datetime
    begin_lsn: str
    end_lsn: str
    begin_wal: str
    end_wal: str
    timeline: int
    pg_version: int | None  # server_version_num, e.g. 150018
    size_bytes: int  # the base backup in the repository
    wal_size_bytes: int  # WAL archived since the backup
    last_available_wal: str | None  # the newest segment in the server's archive

    def facts(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "status": self.status,
            "begin_time": iso(self.begin),
            "end_time": iso(self.end),
            "begin_lsn": self.begin_lsn,
            "end_lsn": self.end_lsn,
            "begin_wal": self.begin_wal,
            "end_wal": self.end_wal,
            "timeline": self.timeline,
            "size_bytes": self.size_bytes,
            "wal_size_bytes": self.wal_size_bytes,
        }


def _server_entry(text: str, server: str, what: str) -> Any:
    try:
        return json.loads(text)[server]
    except (ValueError, KeyError, TypeError):
        raise BackupDefect(
            f"barman {what} has no server {server!r}", hint="check source.server and the barman.conf"
        ) from None


def _ts(epoch: Any) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


def parse_xlogdb(text: str) -> dict[str, str | None]:
    """Barman's ``xlog.db`` (name, size, time, compression per line): segment name -> compression."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0]:
            out[parts[0]] = None if parts[3] in ("None", "") else parts[3]
    return out


def parse_list_backups(text: str, server: str) -> list[tuple[str, str, datetime | None]]:
    """``barman -f json list-backups``: (backup id, status, end time), oldest first."""
    out = []
    for b in _server_entry(text, server, "list-backups") or []:
        end = b.get("end_time_timestamp")
        out.append((str(b["backup_id"]), str(b.get("status", "?")), _ts(end) if end else None))
    return sorted(out, key=lambda t: t[0])


def parse_show_backup(text: str, server: str) -> BarmanBackup:
    """``barman -f json show-backup SERVER ID``."""
    e = _server_entry(text, server, "show-backup")
    try:
        base, wal = e["base_backup_information"], e.get("wal_information") or {}
        return BarmanBackup(
            backup_id=str(e["backup_id"]),
            status=str(e.get("status", "?")),
            begin=datetime.fromisoformat(str(base["begin_time"])),
            end=datetime.fromisoformat(str(base["end_time"])),
            begin_lsn=str(base.get("begin_lsn", "")),
            end_lsn=str(base.get("end_lsn", "")),
            begin_wal=str(base["begin_wal"]),
            end_wal=str(base["end_wal"]),
            timeline=int(base.get("timeline", 1)),
            pg_version=int(e["postgresql_version"]) if e.get("postgresql_version") else None,
            size_bytes=int(base.get("disk_usage_bytes", 0)),
            wal_size_bytes=int(wal.get("disk_usage_bytes", 0)),
            last_available_wal=wal.get("last_available") or None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupDefect(f"barman show-backup: the catalogue entry lacks {exc}") from None


def choose_backup(
    backups: list[tuple[str, str, datetime | None]], server: str, target: datetime | None, backup_id: str | None
) -> str:
    """The named backup, or the newest DONE backup that ended at or before the target (``latest``: the newest)."""
    done = [(i, end) for i, status, end in backups if status == "DONE" and end is not None]
    if backup_id is not None:
        named = next((b for b in backups if b[0] == backup_id), None)
        if named is None:
            raise BackupDefect(
                f"server {server!r} has no backup {backup_id!r}",
                hint="backups in the catalogue: " + (", ".join(b[0] for b in backups) or "none"),
            )
        if named[1] != "DONE":
            raise BackupDefect(f"backup {backup_id} has status {named[1]}, not DONE: it cannot be restored")
        return backup_id
    if not done:
        raise BackupDefect(
            f"server {server!r} holds no completed (DONE) backup"
            + (f" ({len(backups)} in other states)" if backups else ""),
            hint="did the backup job run against this catalogue? can barman_user read barman_home?",
        )
    if target is None:
        return done[-1][0]
    before = [i for i, end in done if end is not None and end <= target]
    if not before:
        oldest = done[0]
        raise BackupDefect(
            f"target_time {iso(target)} is outside the restorable range of server {server!r}: "
            f"before the end of its oldest backup {oldest[0]} ({iso(oldest[1]) if oldest[1] else '?'})",
            hint="choose a later target; older backups have expired from the catalogue",
        )
    return before[-1]


def classify_check(text: str, server: str) -> dict[str, Any]:
    """``barman -f json check``: failures that matter raise; the rest are recorded."""
    entries = _server_entry(text, server, "check") or {}
    failed = {k: str(v.get("hint", "")) for k, v in entries.items() if str(v.get("status", "")).upper() != "OK"}
    env = {k: h for k, h in failed.items() if k in ENVIRONMENT_CHECKS}
    if env:
        raise PreflightError(
            "barman check: " + "; ".join(f"{k} FAILED {h}".strip() for k, h in env.items()),
            hint="the drill's user cannot use the catalogue's directories",
        )
    repo = {k: h for k, h in failed.items() if k in REPOSITORY_CHECKS}
    if repo:
        raise BackupDefect("barman check: " + "; ".join(f"{k} FAILED {h}".strip() for k, h in repo.items()))
    return {
        "command": "barman check",
        "checks": len(entries),
        "failed_not_about_the_repository": sorted(failed),
    }
