"""The ``barman`` backend's declaration: ``kind: barman``, a server in a Barman catalogue.

Pure pydantic, kept apart from :mod:`drills.engines.postgres.barman` because the runbook
loader reads every declaration and must stay light (as :mod:`.pgbackrest_declaration`). There is
no pass-through of ``barman recover`` options: the drill owns where and how the
restore happens, so a runbook cannot point it at a production data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from drills.backends.declare import BackendDeclaration, SourceModel, TargetTime, aware_target_time

__all__ = ["DECLARATION", "BarmanSource"]


class BarmanSource(SourceModel):
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

    _tz = field_validator("target_time")(aware_target_time)


DECLARATION = BackendDeclaration(
    name="barman",
    kinds={"barman": BarmanSource},
    factory="drills.engines.postgres.barman:create",
    check_backup="drills.engines.postgres.barman:check_backup",
)
