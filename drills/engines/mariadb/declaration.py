"""The ``local-mariadb`` backend's declaration: source kinds ``mariadb-pitr`` and ``mariadb-dump``.

Kept apart from :mod:`drills.engines.mariadb.backend` because the runbook loader reads every
declaration and must stay light: importing the backend itself costs ~80 ms (threads, asyncio,
server helpers). This module needs pydantic only; the backend is imported when a drill runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from drills.backends.declare import BackendDeclaration, RpoReference, SourceModel, TargetTime, aware_target_time

__all__ = ["DECLARATION", "MariadbDumpSource", "MariadbPitrSource"]


class MariadbPitrSource(SourceModel):
    kind: Literal["mariadb-pitr"]
    backup: Path = Field(description="mariadb-backup --backup target directory (prepared on restore).")
    binlogs: Path = Field(description="Directory holding the source's binary logs and their index.")
    target_time: TargetTime
    database: str = Field(default="mysql", description="Database the validators connect to.")

    _tz = field_validator("target_time")(aware_target_time)


class MariadbDumpSource(SourceModel):
    kind: Literal["mariadb-dump"]
    dump: Path = Field(description="mariadb-dump / mysqldump SQL file, optionally .gz.")
    database: str = Field(default="restored", description="Database to restore into when the dump names none.")
    taken_at: datetime | None = None


def _rpo_reference(source: MariadbPitrSource | MariadbDumpSource) -> RpoReference:
    """A dump holds the data as it was taken; a PITR restore replays binary logs to its target."""
    return "backup-created" if isinstance(source, MariadbDumpSource) else "recovery-target"


DECLARATION = BackendDeclaration(
    name="local-mariadb",
    kinds={"mariadb-pitr": MariadbPitrSource, "mariadb-dump": MariadbDumpSource},
    factory="drills.engines.mariadb.backend:create",
    check_backup="drills.engines.mariadb.backend:check_backup",
    rpo_reference=_rpo_reference,
)
