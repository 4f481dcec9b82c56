"""What waiting for an RDS instance and an Aurora cluster share: one status check, polled by the caller.

A restored instance or cluster may be invisible for a while (eventual consistency), then reads
``creating``, then ``available``; after a modify it may still be ``available`` with the change
pending. The check says ``pending`` until the status is ``available`` (and, when asked, nothing
the drill waits for is pending), fails at once on a terminal status, and fails when the resource
disappears after the grace period. The ``poll`` itself stays with each backend (``rds.py``,
``aurora.py``), with the policy it waits under.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drills.aws.calls import is_not_found, terminal
from drills.backends.base import StepContext
from drills.errors import RestoreFailed
from drills.wait import Verdict

__all__ = ["APPEAR_GRACE_S", "WAIT_FOR_PENDING", "modifications_pending", "status_check"]

# How long a just-requested resource may be invisible (eventual consistency) before that is a failure.
APPEAR_GRACE_S = 120.0
# Pending modifications that must be applied before the drill may connect.
WAIT_FOR_PENDING = frozenset({"MasterUserPassword", "IAMDatabaseAuthenticationEnabled", "BackupRetentionPeriod"})


def modifications_pending(status: str | None, pending: Mapping[str, Any] | None) -> bool:
    return status != "available" or bool(set(pending or {}) & WAIT_FOR_PENDING)


def status_check(
    ctx: StepContext,
    describe: Callable[[], Mapping[str, Any]],
    what: str,
    status_key: str,
    terminal_states: frozenset[str],
    *,
    modifications: bool = False,
) -> Callable[[], tuple[Verdict, dict[str, Any]]]:
    """A ``poll`` check: ``describe`` the resource (``what``, e.g. ``DB instance x``) and judge its status."""
    started = ctx.clock.monotonic_ns()

    def check() -> tuple[Verdict, dict[str, Any]]:
        try:
            found = describe()
        except Exception as exc:
            if is_not_found(exc) and (ctx.clock.monotonic_ns() - started) / 1e9 < APPEAR_GRACE_S:
                return "pending", {}
            if is_not_found(exc):
                raise RestoreFailed(f"{what} disappeared while waiting") from exc
            raise
        status = found.get(status_key)
        terminal(status, terminal_states, what)
        if modifications:
            busy = modifications_pending(status, found.get("PendingModifiedValues"))
        else:
            busy = status != "available"
        return ("pending" if busy else "ready"), dict(found)

    return check
