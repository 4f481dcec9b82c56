"""Runbook ``source`` model for ``kind: barman``: a server in a Barman catalogue.

Pure pydantic, kept apart from :mod:`drills.sources` so the backend and its
declaration move together (as :mod:`drills.pgbackrest_source`). There is
no pass-through of ``barman recover`` options: the drill owns where and how the
restore happens, so a runbook cannot point it at a production data directory.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BarmanSource"]

TargetTime = datetime | Literal["latest"]  # as in drills.sources (not imported: it imports this module)


class BarmanSource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["barman"]
    server: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The Barman server name to restore.")
    config: Path = Field(description="The barman.conf that describes the server (barman -c).")
    backup_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Backup id; default: the newest backup that ended before the target.",
    )
    target_time: TargetTime = Field(description="Recovery target (timezone-aware) or `latest`.")
    wal_verify: Literal["headers", "full"] = Field(
        default="headers", description="WAL checks before recovery: page headers, or `full` (record CRCs)."
    )
    database: str = Field(default="postgres", description="Database the validators connect to.")
    user: str = Field(default="postgres", description="A superuser of the backed-up cluster.")

    @field_validator("target_time")
    @classmethod
    def _aware(cls, v: TargetTime) -> TargetTime:
        if isinstance(v, datetime) and v.tzinfo is None:
            raise ValueError("target_time needs a timezone, e.g. 2026-11-26T12:00:00Z")
        return v
