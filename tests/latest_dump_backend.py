"""A backend added in one module, as a third party would: ``kind: latest-dump``.

It drills the newest ``pg_dump`` archive a nightly job leaves in a folder (``directory``, files matching
``pattern``), restored into a throwaway local PostgreSQL by the ``local-postgres`` backend's own pieces:
this module picks the archive and hands the rest to that backend, so the machine, the validators, the
evidence and teardown are exactly the product's. It is registered from the tests, either with
:func:`drills.backends.register` or as a ``restore_drills.backends`` entry point written into a
throwaway ``*.dist-info`` (see ``tests/functional/test_backend_plugin.py``).

What the declaration says, and the tests prove the product honours:

* ``directory`` is ``MustExist``: a folder that is not there is a runbook or mount mistake (exit 2,
  ``FILE:LINE: source.directory: path does not exist``), while an empty folder is a missing backup, a failed
  drill with evidence (``BackupDefect``, exit 1);
* the RPO reference is the dump's creation time (``backup-created``), so the evidence says method ``dump``;
* ``check_backup`` lets ``drill validate`` find an empty folder before the night of the drill.

Like a built-in declaration, the module imports nothing heavy at load: the PostgreSQL backend is imported
by ``create`` and ``check_backup``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from drills.backends.base import BackendSettings, StepContext
from drills.backends.declare import BackendDeclaration, MustExist, SourceModel
from drills.errors import BackupDefect

__all__ = ["DECLARATION", "LatestDump", "LatestDumpSource", "check_backup", "create"]

NAME = "latest-dump"


class LatestDumpSource(SourceModel):
    kind: Literal["latest-dump"]
    directory: Annotated[Path, MustExist] = Field(description="Where the dump job writes its archives.")
    pattern: str = Field(default="*.pgc", description="Which files are archives (glob).")
    database: str = Field(default="restored", description="Database created for the restore.")


def newest_archive(source: LatestDumpSource) -> Path:
    """The newest archive by modification time; none is a missing backup (exit 1), not a bad runbook."""
    found = [p for p in source.directory.glob(source.pattern) if p.is_file()]
    if not found:
        raise BackupDefect(f"no archive matching {source.pattern} in {source.directory}", hint="did the dump job run?")
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _as_postgres_dump(source: LatestDumpSource) -> Any:
    from drills.engines.postgres.declaration import PostgresDumpSource

    return PostgresDumpSource(kind="postgres-dump", archive=newest_archive(source), database=source.database)


def check_backup(source: LatestDumpSource) -> dict[str, Any]:
    from drills.engines.postgres.backend import check_backup as check_dump

    dump = _as_postgres_dump(source)
    return {"archive": str(dump.archive), **check_dump(dump)}


class LatestDump:
    """Picks the archive in preflight (a missing one fails the drill with evidence), then is the local-postgres
    backend for every later step; the resources it registers name ``local-postgres``, whose teardown needs
    nothing but the resource record, during the run and after a crash alike."""

    name = NAME

    def __init__(self, source: LatestDumpSource, settings: BackendSettings) -> None:
        from drills.engines.postgres.backend import create as create_postgres

        self.source = source
        self.settings = settings
        self._create = create_postgres
        # until preflight picks the archive, a backend with no source: what it reports is empty (as after a crash)
        self._inner: Any = create_postgres(None, settings)

    def preflight(self, ctx: StepContext, *args: Any, **kwargs: Any) -> Any:
        self._inner = self._create(_as_postgres_dump(self.source), self.settings)
        return self._inner.preflight(ctx, *args, **kwargs)

    def __getattr__(self, attr: str) -> Any:  # every other step is the local-postgres backend's own
        return getattr(self.__dict__["_inner"], attr)


def create(source: LatestDumpSource, settings: BackendSettings) -> LatestDump:
    return LatestDump(source, settings)


DECLARATION = BackendDeclaration(
    name=NAME,
    kinds={"latest-dump": LatestDumpSource},
    factory=f"{__name__}:create",
    check_backup=f"{__name__}:check_backup",
    rpo_reference=lambda source: "backup-created",
)
