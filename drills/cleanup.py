"""Cleanup across backends: who removes a journaled resource, and finishing a crashed run.

Teardown dispatches on the resource record, not on the run's backend object,
because after a crash there is no backend object: ``drill teardown RUN_ID``
rebuilds the backend named in each journaled resource from the source stored
in the journal. The run's scratch directory is removed here, last.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import structlog

from drills.backends import SOURCE_BACKENDS, backend_factory
from drills.backends.base import Backend, BackendSettings, StepContext, Teardown
from drills.clock import Clock, SystemClock, iso
from drills.errors import InputError, TeardownError
from drills.journal import Journal, read_events, summarize
from drills.machine import teardown_resources
from drills.resources import Resource, TeardownResult

__all__ = ["SCRATCH_BACKEND", "SCRATCH_KIND", "Dispatch", "finish_teardown"]

log = structlog.get_logger("drills.cleanup")

SCRATCH_KIND = "scratch-dir"
SCRATCH_BACKEND = "local-fs"


def _remove_scratch(resource: Resource, ctx: StepContext) -> TeardownResult:
    path = Path(resource.id)
    if not path.name.startswith("restore-drill-"):
        raise TeardownError(f"refusing to remove {path}: not a scratch directory of this tool")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        return TeardownResult(resource, deleted=False, detail=f"{path} could not be removed")
    return TeardownResult(resource, deleted=True, detail=f"{path} removed", verified_at=iso(ctx.clock.now()))


class Dispatch:
    """Teardown by resource: the scratch directory here, everything else by its backend."""

    def __init__(self, backend: Backend | None, settings: BackendSettings, sources: dict[str, Any]) -> None:
        self._backend = backend
        self._settings = settings
        self._sources = sources
        self._built: dict[str, Backend] = {}

    def __call__(self, r: Resource) -> Teardown:
        if r.kind == SCRATCH_KIND:
            return _ScratchBackend()
        if self._backend is not None and self._backend.name == r.backend:
            return self._backend
        if r.backend not in self._built:
            self._built[r.backend] = backend_factory(r.backend)(self._sources.get(r.backend), self._settings)
        return self._built[r.backend]


class _ScratchBackend:
    name = SCRATCH_BACKEND

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        return _remove_scratch(resource, ctx)


def finish_teardown(run_id: str, *, clock: Clock | None = None, home: Path | None = None) -> list[TeardownResult]:
    """``drill teardown RUN_ID``: remove what a crashed run left, from its journal alone."""
    from pydantic import TypeAdapter

    from drills.sources import Source

    clk = clock or SystemClock()
    journal = Journal.reopen(run_id, clk, home)
    events = read_events(journal.path)
    summary = summarize(run_id, events)
    if summary.status == "running":
        raise InputError(f"run {run_id} is still running (pid {summary.pid})", hint="stop it first (Ctrl-C tears down)")
    started = next((e for e in events if e.get("event") == "run_started"), None)
    source = TypeAdapter(Source).validate_python(started["source"]) if started else None
    settings = BackendSettings(run_id=run_id, run_dir=Path(tempfile.gettempdir()), clock=clk)
    dispatch = Dispatch(None, settings, {SOURCE_BACKENDS[source.kind]: source} if source else {})
    journal.append("teardown_resumed", outstanding=[r.to_dict() for r in summary.outstanding])
    ctx = StepContext(
        clock=clk, deadline_ns=clk.monotonic_ns() + int(3600e9), log=log.bind(run_id=run_id), register=lambda r: None
    )
    # resources are kept in creation order; teardown_resources reverses them
    results, errors = teardown_resources(dispatch, summary.outstanding, journal, ctx)
    journal.append("teardown_finished", errors=errors)
    journal.close()
    if errors:
        raise TeardownError("; ".join(errors))
    return results
