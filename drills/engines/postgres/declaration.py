"""The ``local-postgres`` backend's declaration: source kinds ``postgres-pitr`` and ``postgres-dump``.

Kept apart from :mod:`drills.engines.postgres.backend` because the runbook loader reads every
declaration and must stay light: importing the backend itself costs ~80 ms (asyncio, subprocess
and server helpers). This module needs pydantic only; the backend is imported when a drill runs.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from drills.backends.declare import BackendDeclaration, RpoReference, SourceModel, TargetTime, aware_target_time

__all__ = ["DECLARATION", "PostgresDumpSource", "PostgresPitrSource"]


class PostgresPitrSource(SourceModel):
    kind: Literal["postgres-pitr"]
    base_backup: Path = Field(description="pg_basebackup output: a plain directory or base.tar[.gz].")
    wal_archive: Path = Field(description="Directory of archived WAL segments (archive_command output).")
    target_time: TargetTime = Field(description="Recovery target (timezone-aware) or `latest`.")
    database: str = Field(default="postgres", description="Database the validators connect to.")
    user: str = Field(default="postgres", description="A superuser of the backed-up cluster.")
    verify: Literal["headers", "full"] = Field(
        default="headers",
        description="WAL checks before restoring: page headers of every needed segment (fast), or `full`: "
        "also every record's CRC with pg_waldump over the needed range.",
    )

    _tz = field_validator("target_time")(aware_target_time)


class PostgresDumpSource(SourceModel):
    kind: Literal["postgres-dump"]
    archive: Path = Field(description="pg_dump custom (-Fc) file or directory (-Fd) archive.")
    database: str = Field(default="restored", description="Database created for the restore.")
    jobs: int = Field(default=2, ge=1, le=64, strict=True, description="pg_restore --jobs.")
    user: str = Field(default="postgres", description="Superuser created in the throwaway cluster.")
    taken_at: datetime | None = Field(default=None, description="When the dump was taken (for the achieved RPO).")


def _rpo_reference(source: PostgresPitrSource | PostgresDumpSource) -> RpoReference:
    """A dump holds the data as it was taken; a PITR restore replays to its target."""
    return "backup-created" if isinstance(source, PostgresDumpSource) else "recovery-target"


DECLARATION = BackendDeclaration(
    name="local-postgres",
    kinds={"postgres-pitr": PostgresPitrSource, "postgres-dump": PostgresDumpSource},
    factory="drills.engines.postgres.backend:create",
    check_backup="drills.engines.postgres.backend:check_backup",
    rpo_reference=_rpo_reference,
)
