"""The drill as a state machine: a table of states, run in order, with
teardown and evidence on every path.

Each state is a named value with a plain work function ``(Drill) -> None``,
a retry policy built from tenacity (attempts, exponential backoff with
jitter, retrying only :class:`~drills.errors.TransientError`) and a deadline.
The table is data, so it can be listed (``drill runs``), tested and one day
exported to Amazon States Language. Every transition is journaled before the
work starts; every attempt becomes one :class:`~drills.measure.TimelineEntry`.

This module imports neither boto3 nor a database driver: the backend and the
validator runner are handed in.
"""

from __future__ import annotations

import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any, TypeVar

import structlog
import tenacity

from drills import cancel
from drills.backends.base import AnyBackend, Fact, Mark, PreflightReport, StepContext, Teardown
from drills.clock import Clock, iso
from drills.errors import (
    DeadlineExceeded,
    DrillError,
    InfrastructureError,
    Interrupted,
    IsolationError,
    TeardownError,
    TransientError,
)
from drills.journal import Journal
from drills.keep import keep_resources
from drills.measure import Measurement, TimelineEntry
from drills.resources import Resource, TeardownResult
from drills.runbook import LoadedRunbook
from validators.base import ValidationReport
from validators.endpoint import Endpoint

__all__ = ["Drill", "RetryPolicy", "State", "run_machine", "teardown_resources"]

log = structlog.get_logger("drills.machine")

TEARDOWN_SECONDS = 3600.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """When a state's work is tried again, as a tenacity value."""

    attempts: int = 1
    initial_s: float = 1.0
    max_s: float = 30.0

    def retrying(self, sleep: Callable[[float], None], deadline_left: Callable[[], float]) -> tenacity.Retrying:
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_before_delay(max(0.0, deadline_left())),
            wait=tenacity.wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s),
            retry=tenacity.retry_if_exception_type(TransientError),
            sleep=sleep,
            reraise=True,
        )


@dataclass
class Drill:
    """Everything a run knows; states read and fill it in."""

    loaded: LoadedRunbook
    backend: AnyBackend
    clock: Clock
    journal: Journal
    run_validators: Callable[[Drill], ValidationReport]
    probe: Callable[[Endpoint], str]
    measure: Callable[[Drill], Measurement]
    keep: bool = False
    keep_seconds: int | None = None  # incident mode: how long kept resources live after the drill passed
    # turns an admin endpoint into the validators' read-only one (drills.reader.ReaderProvisioner)
    provision_reader: Callable[[Endpoint], Endpoint] | None = None
    preflight: PreflightReport[Any] | None = None  # its ``plan`` is what restore acts on
    restored: Any = None  # what the backend's restore returned, for await_ready (see ``_handed``)
    ready: Any = None  # what await_ready returned: isolation and the endpoint are read from it
    isolation: list[Fact] = field(default_factory=list)  # from verify_isolation (or an IsolationError's facts)
    endpoint: Endpoint | None = None
    server_version: str | None = None
    validation: ValidationReport | None = None
    measurement: Measurement | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    teardown_results: list[TeardownResult] = field(default_factory=list)
    teardown_errors: list[str] = field(default_factory=list)
    error: DrillError | None = None
    failed_state: str | None = None
    interrupted: bool = False
    restore_requested_at: datetime | None = None
    deadline_ns: int | None = None  # whole-drill deadline, set at the restore request
    regression: dict[str, Any] | None = None  # RTO against recent drills of the runbook (drills.history)

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    @property
    def journal_errors(self) -> list[str]:
        """Journal appends that failed (best effort on the teardown path): for the evidence."""
        return list(self.journal.errors)

    def register(self, resource: Resource) -> None:
        """Remember a resource for teardown, then journal it, before it is created.

        Memory first: teardown works from ``resources`` even when the journal
        cannot be written (a full disk), and removing what was never created
        is "already gone". The same resource registered again (a retried
        restore) is journaled once; registered again with other attributes
        (the server's pid and start time, once it runs) it replaces the
        earlier record in place and is journaled again: the last one wins.
        """
        key = (resource.backend, resource.kind, resource.id)
        for i, r in enumerate(self.resources):
            if (r.backend, r.kind, r.id) == key:
                if r == resource:
                    return
                self.resources[i] = resource
                break
        else:
            self.resources.append(resource)
        self.journal.append("resource_registered", resource=resource.to_dict())


@dataclass(frozen=True)
class State:
    name: str
    work: Callable[[Drill, StepContext], None]
    retry: RetryPolicy = RetryPolicy()
    timeout_s: float | None = None


# ------------------------------------------------------------------ state work


def _handed(d: Drill, value: _T | None, by: str) -> _T:
    """What an earlier state handed on; a state run out of order is the machine's bug, said plainly."""
    if value is None:
        raise InfrastructureError(f"{d.backend.name}: {by} has not completed")
    return value


def _preflight(d: Drill, ctx: StepContext) -> None:
    d.preflight = d.backend.preflight(ctx)


def _restore(d: Drill, ctx: StepContext) -> None:
    plan = _handed(d, d.preflight, "preflight").plan
    d.restored = d.backend.restore(plan, ctx)


def _await_ready(d: Drill, ctx: StepContext) -> None:
    """Wait for the database, then prove it isolated: the one place every backend's isolation is read."""
    d.ready = d.backend.await_ready(_handed(d, d.restored, "restore"), ctx)
    d.isolation = list(d.backend.verify_isolation(d.ready, ctx))
    bad = [f for f in d.isolation if not f.passed]
    if bad:  # a backend that returns a failed fact instead of raising still fails the drill
        raise IsolationError(
            f"{d.backend.name}: the restored database is not isolated: "
            + "; ".join(f"{f.check} {f.subject}: {f.detail}" for f in bad),
            facts=tuple(d.isolation),
        )


def _connect(d: Drill, ctx: StepContext) -> None:
    ep = d.backend.endpoint(_handed(d, d.ready, "await_ready"), ctx)
    override = d.loaded.runbook.connect
    if override is not None:
        ep = ep.routed_to(override.host, override.port)
    if ep.admin:  # used once, to create the validators' read-only role, then dropped
        if d.provision_reader is None:
            raise InfrastructureError(f"{d.backend.name} hands out admin credentials and nothing creates a reader")
        ep = d.provision_reader(ep)
    d.endpoint = ep
    d.server_version = d.probe(ep)


def _validate(d: Drill, ctx: StepContext) -> None:
    d.validation = d.run_validators(d)


def _measure(d: Drill, ctx: StepContext) -> None:
    d.measurement = d.measure(d)


def default_states(loaded: LoadedRunbook) -> list[State]:
    """The drill's table, with the runbook's per-state overrides applied."""
    defaults = [
        State("preflight", _preflight),
        State("restore", _restore),
        State("await_ready", _await_ready),
        State("connect", _connect, RetryPolicy(attempts=10, initial_s=0.2, max_s=5.0), timeout_s=120),
        State("validate", _validate),
        State("measure", _measure),
    ]
    out = []
    for s in defaults:
        p = loaded.runbook.states.get(s.name)  # type: ignore[call-overload]
        if p is None:
            out.append(s)
        else:
            policy = RetryPolicy(p.attempts, p.backoff_initial_seconds, p.backoff_max_seconds)
            out.append(State(s.name, s.work, policy, p.timeout_seconds or s.timeout_s))
    return out


# ------------------------------------------------------------------ signals


@contextmanager
def _signals_raise_interrupted() -> Iterator[None]:
    """SIGINT and SIGTERM become Interrupted in the main thread; on a fleet's worker thread, its cancel token."""
    if threading.current_thread() is not threading.main_thread():
        with cancel.armed(True):
            yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _signals_deferred(journal: Journal) -> Iterator[list[int]]:
    """While tearing down, a signal is noted, not obeyed: cleanup must finish."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        with cancel.armed(False):  # a fleet's cancel waits, like a signal here
            yield got
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)
        log.warning("signal_deferred", signal=signal.Signals(signum).name, reason="teardown and evidence in progress")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------ running


def _ctx(d: Drill, timeout_s: float | None) -> StepContext:
    now = d.clock.monotonic_ns()
    deadlines = [now + int(timeout_s * 1e9)] if timeout_s else []
    if d.deadline_ns is not None:
        deadlines.append(d.deadline_ns)
    deadline = min(deadlines) if deadlines else now + int(86400 * 1e9)
    return StepContext(clock=d.clock, deadline_ns=deadline, log=log, register=d.register, marks=d.marks)


def _translate(exc: BaseException) -> DrillError:
    if isinstance(exc, DrillError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted by SIGINT")
    return InfrastructureError(f"unexpected {type(exc).__name__}: {exc}")


def _run_state(d: Drill, state: State) -> None:
    attempt = 0

    def left() -> float:
        if d.deadline_ns is None:
            return 86400.0
        return (d.deadline_ns - d.clock.monotonic_ns()) / 1e9

    for tried in state.retry.retrying(d.clock.sleep, left):
        with tried:
            attempt += 1
            d.journal.append("state_entered", state=state.name, attempt=attempt)
            log.info("state_entered", state=state.name, attempt=attempt)
            start_at, start_ns = d.clock.now(), d.clock.monotonic_ns()
            ctx = _ctx(d, state.timeout_s)
            outcome, err = "ok", None
            try:
                state.work(d, ctx)
                if d.clock.monotonic_ns() > ctx.deadline_ns:
                    raise DeadlineExceeded(
                        f"state {state.name} ran past its deadline",
                        hint="raise states.<name>.timeout_seconds or deadline_seconds in the runbook",
                    )
            except BaseException as exc:
                outcome = "retry" if isinstance(exc, TransientError) else "error"
                err = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                entry = TimelineEntry(
                    state.name,
                    attempt,
                    iso(start_at),
                    iso(d.clock.now()),
                    start_ns,
                    d.clock.monotonic_ns(),
                    outcome,
                    err,
                )
                d.timeline.append(entry)
                try:
                    d.journal.append("state_exited", **entry.to_dict())
                except DrillError:
                    if err is None:
                        raise
                    # the state's own error says more; the journal's failure is in journal.errors
                failed = (
                    [f for f in d.validation.findings if not f.passed]
                    if state.name == "validate" and d.validation
                    else []
                )
                log.info(
                    "state_exited",
                    run_id=d.run_id,
                    state=state.name,
                    attempt=attempt,
                    outcome="failed" if failed and outcome == "ok" else outcome,
                    duration_ms=entry.duration_ms,
                    error=err
                    or (
                        f"{len(failed)} of {len(d.validation.findings)} checks failed"
                        if failed and d.validation
                        else None
                    ),
                )


def teardown_resources(
    backend_for: Callable[[Resource], Teardown], resources: list[Resource], journal: Journal, ctx: StepContext
) -> tuple[list[TeardownResult], list[str]]:
    """Remove resources in reverse order of creation; collect every error instead of stopping.

    Works from ``resources`` (memory), never from the journal: appends here are
    best effort, and a failed one is collected in ``journal.errors``.
    """
    journal.best_effort = True
    results: list[TeardownResult] = []
    errors: list[str] = []
    for r in reversed(resources):
        journal.append("teardown_started", resource=r.to_dict())
        try:
            res = backend_for(r).teardown(r, ctx)
        except Exception as exc:  # every failure is recorded, the rest still runs
            msg = f"{r.kind} {r.id}: {type(exc).__name__}: {exc}"
            errors.append(msg)
            results.append(TeardownResult(r, deleted=False, detail=msg))
            journal.append("teardown_failed", resource=r.to_dict(), error=msg)
            log.error("teardown_failed", resource=r.id, kind=r.kind, error=msg)
            continue
        results.append(res)
        if res.deleted:
            journal.append("resource_removed", resource=r.to_dict(), verified_at=res.verified_at, detail=res.detail)
        else:
            errors.append(f"{r.kind} {r.id}: {res.detail or 'not confirmed gone'}")
            journal.append("teardown_failed", resource=r.to_dict(), error=res.detail)
    return results, errors


def run_machine(
    d: Drill,
    states: list[State],
    finish: Callable[[Drill], None],
    backend_for: Callable[[Resource], Teardown] | None = None,
) -> Drill:
    """Run the states in order; then teardown and ``finish`` (evidence) on every path.

    ``backend_for`` picks who removes a resource (default: the drill's backend).
    """
    try:
        with _signals_raise_interrupted():
            for state in states:
                if state.name == "restore" and d.restore_requested_at is None:
                    # the RTO clock and the whole-drill deadline start at the restore request
                    d.restore_requested_at = d.clock.now()
                    d.deadline_ns = d.clock.monotonic_ns() + int(d.loaded.runbook.effective_deadline_seconds * 1e9)
                try:
                    cancel.check()  # a fleet drill on a worker thread: its fleet was signalled
                    _run_state(d, state)
                except BaseException as exc:
                    d.error = _translate(exc)
                    d.failed_state = state.name
                    if isinstance(d.error, IsolationError) and d.error.facts:
                        d.isolation = list(d.error.facts)  # the checks that refused the drill, for the evidence
                    d.interrupted = isinstance(d.error, Interrupted)
                    if not isinstance(exc, DrillError | KeyboardInterrupt):
                        log.error("unexpected_error", state=state.name, traceback=traceback.format_exc())
                    break
    except BaseException as exc:  # a signal between states
        d.error = d.error or _translate(exc)
        d.interrupted = True
    d.journal.best_effort = True  # from here on nothing waits on the journal: resources are in memory
    with _signals_deferred(d.journal) as deferred:
        # teardown has its own hour, whatever deadline the drill ran past: RDS deletions are slow
        ctx = StepContext(
            clock=d.clock,
            deadline_ns=d.clock.monotonic_ns() + int(TEARDOWN_SECONDS * 1e9),
            log=log,
            register=d.register,
            marks=d.marks,
        )
        # incident mode: kept until the TTL ends, journaled with its expiry (drills.keep); else torn down
        if not (d.keep and d.error is None and keep_resources(d, ctx, backend_for or (lambda _r: d.backend))):
            d.journal.append("state_entered", state="teardown", attempt=1)
            start_at, start_ns = d.clock.now(), d.clock.monotonic_ns()
            d.teardown_results, d.teardown_errors = teardown_resources(
                backend_for or (lambda _r: d.backend), d.resources, d.journal, ctx
            )
            outcome = "error" if d.teardown_errors else "ok"
            entry = TimelineEntry(
                "teardown",
                1,
                iso(start_at),
                iso(d.clock.now()),
                start_ns,
                d.clock.monotonic_ns(),
                outcome,
                "; ".join(d.teardown_errors) or None,
            )
            d.timeline.append(entry)
            d.journal.append("state_exited", **entry.to_dict())
            if d.teardown_errors and d.error is None:
                d.error = TeardownError("; ".join(d.teardown_errors))
                d.failed_state = "teardown"
        if d.journal.errors and d.error is None:
            # everything was torn down, but `drill runs` / `drill teardown` will not know it: say so, exit 3
            d.error = InfrastructureError(
                f"the journal could not record {len(d.journal.errors)} event(s): {d.journal.errors[0]}",
                hint=f"free space where {d.journal.path} lives; teardown ran from memory",
            )
            d.failed_state = "teardown"
        finish(d)
        if deferred:
            d.interrupted = True
    return d
