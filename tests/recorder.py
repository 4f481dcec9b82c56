"""A backend that records what the machine asks of it and fails where a test says.

Not a database: tests of the machine's order of states, retries, deadlines,
teardown and evidence use it; the same paths against real servers are in
tests/functional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drills.backends.base import Fact, PreflightReport, StepContext
from drills.errors import RestoreFailed, TransientError
from drills.resources import Resource, TeardownResult
from validators.endpoint import Endpoint


@dataclass(frozen=True)
class Handed:
    """What one step of the recorder hands the next (the machine must pass on exactly this value)."""

    step: str


@dataclass
class Recorder:
    """A backend that registers two resources and fails in the state it is told to.

    ``received`` lists what each step was handed; ``isolation`` is what ``verify_isolation`` returns.
    """

    fail_in: str | None = None
    error: BaseException = field(default_factory=lambda: RestoreFailed("injected"))
    transient_failures: int = 0
    restore_takes_s: float = 0.0
    calls: list[str] = field(default_factory=list)
    torn_down: list[str] = field(default_factory=list)
    received: list[tuple[str, Handed]] = field(default_factory=list)
    isolation: list[Fact] = field(default_factory=lambda: [Fact("fake", "recorder", True, "nothing to reach")])
    name: str = "recorder"

    def _step(self, state: str) -> None:
        self.calls.append(state)
        if state == self.fail_in:
            if self.transient_failures > 0:
                self.transient_failures -= 1
                raise TransientError("try again")
            if self.transient_failures == 0 and isinstance(self.error, TransientError):
                return
            raise self.error

    def preflight(self, ctx: StepContext) -> PreflightReport[Handed]:
        self._step("preflight")
        return PreflightReport(source={"engine": "fake"}, recovery_point={"kind": "pitr"}, plan=Handed("plan"))

    def restore(self, plan: Handed, ctx: StepContext) -> Handed:
        self.received.append(("restore", plan))
        ctx.register(Resource("thing", "a", self.name))
        self._step("restore")
        ctx.register(Resource("thing", "b", self.name))
        return Handed("restored")

    def await_ready(self, restored: Handed, ctx: StepContext) -> Handed:
        self.received.append(("await_ready", restored))
        ctx.clock.sleep(self.restore_takes_s)
        self._step("await_ready")
        return Handed("ready")

    def verify_isolation(self, ready: Handed, ctx: StepContext) -> list[Fact]:
        self.received.append(("verify_isolation", ready))
        self._step("verify_isolation")
        return list(self.isolation)

    def endpoint(self, ready: Handed, ctx: StepContext) -> Endpoint:
        self.received.append(("endpoint", ready))
        self._step("connect")
        return Endpoint("postgres", "/nowhere", 1, "db", "u")

    def target_facts(self) -> dict[str, Any]:
        return {"kind": "recorder"}

    def recovery_proof(self) -> dict[str, Any] | None:
        return None

    def connection_hint(self) -> str | None:
        return None

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        self.torn_down.append(resource.id)
        return TeardownResult(resource, deleted=True, detail="gone", verified_at="2026-01-01T00:00:00.000Z")
