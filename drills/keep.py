"""Incident mode (``drill run --keep TTL``): what a passed drill keeps, until when, and what removed it.

A kept resource is a restored copy of production (locally a server that trusts
its superuser on a private socket), so "keep for an hour" must end in an hour:

* when a drill passes with ``--keep``, every resource is journaled as
  ``resource_kept`` with ``expires_at`` = now + TTL, and the backend may mark the
  resource itself (AWS moves its ``expires-at`` tag and adds ``kept-at``, so a
  sweeper on another machine reaches the same decision);
* ``drill sweep`` removes local kept resources once ``expires_at`` has passed,
  with the same teardown as ``drill teardown RUN_ID``, and journals the
  removal into the run's journal, so ``drill runs`` shows what a sweep took;
* if the keep cannot be journaled (a full disk), nothing could ever find the
  resource again: it is torn down instead, and the evidence says it was not kept.

Everything here reads or appends journal events; the folding of a run's events
into its summary stays in :mod:`drills.journal`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from drills.aws.calls import parse_time
from drills.clock import iso
from drills.journal import read_events

if TYPE_CHECKING:
    from drills.backends.base import StepContext, Teardown
    from drills.machine import Drill
    from drills.resources import Resource

__all__ = [
    "KEPT_EVENT",
    "SWEEP_EVENT",
    "KeepState",
    "keep_resources",
    "keep_state",
    "kept_json",
    "kept_resources",
]

KEPT_EVENT = "resource_kept"
SWEEP_EVENT = "sweep_removing"  # journaled by `drill sweep` before it removes a run's expired resources


def keep_resources(d: Drill, ctx: StepContext, backend_for: Callable[[Resource], Teardown]) -> bool:
    """Keep the run's resources until now + the TTL; False (teardown instead) when that cannot be journaled.

    A backend that can mark a resource as kept (``keep(resource, ctx, until) -> str``, the AWS
    backends) is asked to; its failure is journaled with the resource and does not stop the keep:
    the resource then still carries the expiry it was created with, which the sweeper honours.
    """
    until = ctx.clock.now() + timedelta(seconds=max(0, d.keep_seconds or 0))
    for r in d.resources:
        detail = "kept"
        hook = getattr(backend_for(r), "keep", None)
        if callable(hook):
            try:
                detail = str(hook(r, ctx, until))
            except Exception as exc:  # the journal below still records the expiry
                detail = f"expiry not marked on the resource: {type(exc).__name__}: {exc}"
                ctx.log.warning("keep_mark_failed", resource=r.id, kind=r.kind, error=str(exc))
        try:
            d.journal.append(KEPT_EVENT, resource=r.to_dict(), expires_at=iso(until), detail=detail)
        except Exception as exc:  # a full disk: nobody could find this resource again
            ctx.log.error("keep_not_journaled", error=str(exc), action="tearing down instead")
            d.keep = False
            return False
    return True


@dataclass
class KeepState:
    """What a run's journal says about incident mode and sweeps."""

    kept: bool = False
    expires_at: datetime | None = None  # latest journaled expiry of its kept resources
    kept_resources: list[dict[str, Any]] = field(default_factory=list)  # {kind, id, backend, expires_at, detail}
    swept: list[dict[str, Any]] = field(default_factory=list)  # {at, kind, id, detail} removed by `drill sweep`

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": self.kept,
            "expires_at": iso(self.expires_at) if self.expires_at else None,
            "kept_resources": self.kept_resources,
            "swept": self.swept,
        }


def keep_state(events: Sequence[Mapping[str, Any]]) -> KeepState:
    """Fold a run's events into its keep state: what was kept until when, and what a sweep removed."""
    state = KeepState()
    sweeping = False
    for ev in events:
        kind = ev.get("event")
        if kind == KEPT_EVENT:
            res = ev.get("resource") or {}
            until = parse_time(ev.get("expires_at"))
            state.kept = True
            state.kept_resources.append(
                {
                    "kind": res.get("kind"),
                    "id": res.get("id"),
                    "backend": res.get("backend"),
                    "expires_at": ev.get("expires_at"),
                    "detail": ev.get("detail"),
                }
            )
            if until is not None and (state.expires_at is None or until > state.expires_at):
                state.expires_at = until
        elif kind == SWEEP_EVENT:
            sweeping = True
        elif kind == "teardown_finished":
            sweeping = False
        elif kind == "resource_removed" and (sweeping or ev.get("by") == "sweep"):
            res = ev.get("resource") or {}
            swept = {"at": ev.get("at"), "kind": res.get("kind"), "id": res.get("id"), "detail": ev.get("detail")}
            state.swept.append(swept)
    return state


def kept_resources(drill: Drill) -> list[dict[str, Any]]:
    """What ``drill run --keep`` kept, for ``--json``: kind, id, backend, expires_at, detail; [] if nothing."""
    if not drill.keep:
        return []
    return keep_state(read_events(drill.journal.path)).kept_resources


def kept_json(drill: Drill) -> dict[str, Any] | None:
    """The ``kept`` object of ``drill run --keep --json``: until when, where to connect (no secret), what.

    None when nothing was kept (no ``--keep``, or the drill did not pass and everything was torn down).
    """
    resources = kept_resources(drill)
    if not resources:
        return None
    state = keep_state(read_events(drill.journal.path))
    return {
        "expires_at": iso(state.expires_at) if state.expires_at else None,
        "endpoint": drill.endpoint.public() if drill.endpoint is not None else None,
        "connect": drill.backend.connection_hint(),
        "resources": resources,
        "removed_by": "drill sweep after expires_at, or drill teardown RUN_ID before",
    }
