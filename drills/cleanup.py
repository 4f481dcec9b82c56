"""Cleanup across backends: who removes a journaled resource, and finishing a crashed run.

Teardown dispatches on the resource record, not on the run's backend object,
because after a crash there is no backend object: ``drill teardown RUN_ID``
rebuilds the backend named in each journaled resource from the source stored
in the journal. The run's scratch directory is removed here, last.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import structlog

from drills.backends import SOURCE_BACKENDS, backend_factory
from drills.backends.base import AnyBackend, BackendSettings, StepContext, Teardown
from drills.clock import Clock, SystemClock, iso
from drills.errors import InfrastructureError, InputError, TeardownError
from drills.journal import Journal, summarize
from drills.machine import teardown_resources
from drills.resources import Resource, TeardownResult

__all__ = ["SCRATCH_BACKEND", "SCRATCH_KIND", "Dispatch", "finish_teardown"]

log = structlog.get_logger("drills.cleanup")

SCRATCH_KIND = "scratch-dir"
SCRATCH_BACKEND = "local-fs"


def _remove_scratch(resource: Resource, ctx: StepContext, run_id: str) -> TeardownResult:
    """Remove ``restore-drill-RUN_ID`` of this run: a real directory of ours, nothing else."""
    path = Path(resource.id)
    if not path.is_absolute() or path.name != f"restore-drill-{run_id}":
        raise TeardownError(f"refusing to remove {path}: not the scratch directory of run {run_id}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return TeardownResult(resource, deleted=True, detail=f"{path} already gone", verified_at=iso(ctx.clock.now()))
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise TeardownError(f"refusing to remove {path}: not a directory this user created")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        return TeardownResult(resource, deleted=False, detail=f"{path} could not be removed")
    return TeardownResult(resource, deleted=True, detail=f"{path} removed", verified_at=iso(ctx.clock.now()))


class Dispatch:
    """Teardown by resource: the scratch directory here, everything else by its backend."""

    def __init__(self, backend: AnyBackend | None, settings: BackendSettings, sources: dict[str, Any]) -> None:
        self._backend = backend
        self._settings = settings
        self._sources = sources
        self._built: dict[str, AnyBackend] = {}

    def __call__(self, r: Resource) -> Teardown:
        if r.kind == SCRATCH_KIND:
            return _ScratchBackend(self._settings.run_id)
        if self._backend is not None and self._backend.name == r.backend:
            return self._backend
        if r.backend not in self._built:
            self._built[r.backend] = backend_factory(r.backend)(self._sources.get(r.backend), self._settings)
        return self._built[r.backend]


class _ScratchBackend:
    name = SCRATCH_BACKEND

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        return _remove_scratch(resource, ctx, self.run_id)


def finish_teardown(run_id: str, *, clock: Clock | None = None, home: Path | None = None) -> list[TeardownResult]:
    """``drill teardown RUN_ID``: remove what a crashed run left, from its journal alone.

    The journal is opened only if nobody else could have written it
    (:meth:`Journal.reopen` refuses otherwise, exit 2, before anything is
    touched), and even then it names *what* to remove, never *how*: backends
    run no binary and signal no process on the journal's word alone. Every log
    line meanwhile carries the run id (bound once, unbound when it returns).
    """
    with structlog.contextvars.bound_contextvars(run_id=run_id):
        return _finish_teardown(run_id, clock=clock, home=home)


def _finish_teardown(run_id: str, *, clock: Clock | None, home: Path | None) -> list[TeardownResult]:
    from pydantic import ValidationError as PydanticError

    from drills.backends import validate_source

    clk = clock or SystemClock()
    journal = Journal.reopen(run_id, clk, home)
    try:
        events = journal.events()
        summary = summarize(run_id, events)
        if summary.status == "running":
            raise InputError(
                f"run {run_id} is still running (pid {summary.pid})", hint="stop it first (Ctrl-C tears down)"
            )
        started = next((e for e in events if e.get("event") == "run_started"), None)
        try:
            source = validate_source(started["source"]) if started else None
        except (PydanticError, KeyError, TypeError):
            raise InputError(
                f"{journal.path}: run_started.source is not a source this tool writes", hint="the journal is damaged"
            ) from None
        settings = BackendSettings(run_id=run_id, run_dir=Path(tempfile.gettempdir()), clock=clk)
        dispatch = Dispatch(None, settings, {SOURCE_BACKENDS[source.kind]: source} if source else {})
        journal.best_effort = True  # the journal must not stop a teardown: failures are reported below
        journal.append(
            "teardown_resumed",
            outstanding=[r.to_dict() for r in summary.outstanding],
            repaired_bytes=journal.repaired_bytes,
        )
        ctx = StepContext(
            clock=clk,
            deadline_ns=clk.monotonic_ns() + int(3600e9),
            log=log,
            register=lambda r: None,
        )
        # resources are kept in creation order; teardown_resources reverses them
        results, errors = teardown_resources(dispatch, summary.outstanding, journal, ctx)
        journal.append("teardown_finished", errors=errors)
    finally:
        journal.close()
    if errors:
        raise TeardownError("; ".join(errors))
    if journal.errors:
        raise InfrastructureError(
            f"teardown finished, but the journal could not record it: {'; '.join(journal.errors)}",
            hint=f"free space where {journal.path} lives, then `drill teardown {run_id}` again (it is idempotent)",
        )
    return results
