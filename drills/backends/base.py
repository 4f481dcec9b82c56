"""The Backend protocol: what the machine asks of any place a restore can happen.

The machine calls, in order: ``preflight`` (no side effects; its report carries
the frozen *plan* of what to restore), ``restore(plan)`` (creates resources,
registering each *before* creating it; returns what it restored),
``await_ready(restored)`` (waits, on the injected clock, within the deadline;
returns the ready database), ``verify_isolation(ready)`` (the proof of
segregation, read back from what was restored, as :class:`Fact` s: the machine
records them and fails the drill on any that did not pass), ``endpoint(ready)``
(where the validators connect, with credentials), ``recovery_proof`` and
``target_facts`` (what was reached, and where) and, on every path, ``teardown``
per resource in reverse order. ``connection_hint`` tells a person how to reach
a database kept with ``--keep``. ``teardown`` must work from the resource record
alone, because after a crash the backend is rebuilt from the journal.

State is handed from step to step as values the machine keeps (plan, restored,
ready), each a frozen type the backend declares as the protocol's type
parameters; what a backend keeps on itself is for the evidence (``target_facts``,
``recovery_proof``) or for a retried step to skip finished work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import structlog

from drills.clock import Clock
from drills.errors import IsolationError
from drills.resources import Resource, TeardownResult
from drills.wait import OnPoll, PollPolicy
from validators.endpoint import Endpoint

__all__ = [
    "NOT_READ",
    "AnyBackend",
    "Backend",
    "BackendFactory",
    "BackendSettings",
    "Fact",
    "Mark",
    "PreflightReport",
    "StepContext",
    "Teardown",
    "require_isolated",
]

PlanT = TypeVar("PlanT")  # what preflight decided: restore acts on it and on nothing else
RestoredT = TypeVar("RestoredT")  # what restore created, for await_ready
ReadyT = TypeVar("ReadyT")  # the database await_ready brought up: isolation and the endpoint are read from it


@dataclass(frozen=True)
class BackendSettings:
    """Run-wide settings a backend may need beyond its runbook source."""

    run_id: str
    run_dir: Path  # private scratch space of this run (data dirs live here for local backends)
    clock: Clock
    runbook_name: str = ""
    keep_seconds: int | None = None  # incident mode: keep the restored database this long
    aws_session: Any = None  # an injected boto3.Session for AWS backends (None: default session)
    # How to pace the wait for a requested restore (the runner builds it from the runbook's history,
    # drills.forecast_poll); None: the plain PollPolicy. The backend needs to know nothing of history.
    restore_poll: PollPolicy | None = None
    on_poll: OnPoll | None = None  # progress of long waits (drills.progress); display only
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """A timestamp a backend observed inside a state (e.g. "available" from RDS events)."""

    name: str
    at: str  # ISO-8601 UTC
    source: str  # "runner-clock" | "rds-event" | "server-log" ...
    precision_ms: int


@dataclass
class StepContext:
    """What a backend gets in each state: time, deadline, a logger and a place to report marks."""

    clock: Clock
    deadline_ns: int  # monotonic deadline of the current state
    log: structlog.typing.FilteringBoundLogger
    register: Callable[[Resource], None]  # journal a resource before creating it
    marks: list[Mark] = field(default_factory=list)

    def remaining_seconds(self) -> float:
        return max(0.0, (self.deadline_ns - self.clock.monotonic_ns()) / 1e9)

    def mark(self, name: str, at: str, source: str = "runner-clock", precision_ms: int = 1) -> None:
        self.marks.append(Mark(name, at, source, precision_ms))


class _NotRead:
    def __repr__(self) -> str:
        return "NOT_READ"


NOT_READ: Any = _NotRead()  # a fact decided without a single value to show (most AWS network checks)


@dataclass(frozen=True)
class Fact:
    """One isolation check, the same shape for every backend: what was checked, on what, with what value
    (as read back from the server or AWS; omitted when there is none), whether it passed, and why."""

    check: str
    subject: str
    passed: bool
    detail: str
    value: Any = NOT_READ

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "subject": self.subject}
        if self.value is not NOT_READ:
            out["value"] = self.value
        return out | {"passed": self.passed, "detail": self.detail}


def require_isolated(facts: list[Fact], message: str, hint: str | None = None) -> list[Fact]:
    """``facts`` when every one passed, else an :class:`~drills.errors.IsolationError` naming the failed ones and
    carrying all of them (the machine records them in the evidence)."""
    bad = [f for f in facts if not f.passed]
    if bad:
        raise IsolationError(f"{message}: " + ", ".join(f.check for f in bad), hint=hint, facts=tuple(facts))
    return facts


@dataclass(frozen=True)
class PreflightReport(Generic[PlanT]):
    """Facts preflight established (they go into the evidence as they are) and the plan restore acts on.

    ``plan`` is the backend's own frozen value; it never reaches the evidence (the facts about it do).
    """

    source: dict[str, Any]  # the production database / backup the drill restores from
    recovery_point: dict[str, Any]  # what will be restored: kind, label/snapshot, target_time, range
    plan: PlanT
    facts: dict[str, Any] = field(default_factory=dict)  # anything else worth recording


class Teardown(Protocol):
    """Anything that can remove a journaled resource (every backend, and the scratch-dir remover)."""

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult: ...


class Backend(Protocol[PlanT, RestoredT, ReadyT]):
    """A place a restore can happen; the type parameters are the frozen values handed from step to step
    (never None: the machine reads None as "that step has not completed")."""

    name: str  # its BackendDeclaration.name, journaled with every resource

    def preflight(self, ctx: StepContext) -> PreflightReport[PlanT]: ...

    def restore(self, plan: PlanT, ctx: StepContext) -> RestoredT: ...

    def await_ready(self, restored: RestoredT, ctx: StepContext) -> ReadyT: ...

    def verify_isolation(self, ready: ReadyT, ctx: StepContext) -> list[Fact]:
        """Every isolation fact of the drill, read back from ``ready`` (AWS: with those proven before restoring).

        A backend may raise :class:`~drills.errors.IsolationError` itself (with its facts); a failed fact it
        returns fails the drill all the same."""
        ...

    def endpoint(self, ready: ReadyT, ctx: StepContext) -> Endpoint: ...

    def recovery_proof(self) -> dict[str, Any] | None:
        """Where recovery got to against what was asked (``requested``, ``reached``, ``complete``, ``detail``);
        None when the backend cannot observe it (AWS restores to a time AWS chose) or before it ran."""
        ...

    def target_facts(self) -> dict[str, Any]: ...

    def connection_hint(self) -> str | None:
        """How a person reaches the restored database kept with ``--keep``, without a secret; None when the
        endpoint's public form says it all (a local server's socket)."""
        ...

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult: ...


AnyBackend = Backend[Any, Any, Any]  # a backend whatever its plan, restored and ready types (the machine's view)


class BackendFactory(Protocol):
    def __call__(self, source: Any, settings: BackendSettings) -> AnyBackend: ...
