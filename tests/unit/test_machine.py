"""The machine with a backend that fails where we say: teardown and evidence on every path.

The backend here is a recorder, not a database: these tests are about the
order of states, retries, deadlines, teardown and the evidence verdict. The
same paths against a real PostgreSQL are in tests/functional.
"""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from recorder import Handed, Recorder

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings, Fact
from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, IsolationError, PreflightError, RestoreFailed, TransientError
from drills.evidence.keys import generate_keypair, load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import Journal, read_events, summarize
from drills.machine import Drill, default_states, run_machine
from drills.measure import measure
from drills.record import build_predicate, verdict_of
from drills.runbook import load_runbook
from validators.base import Finding, ValidationReport
from validators.endpoint import Endpoint

RUNBOOK = textwrap.dedent(
    """\
    name: machine-test
    source:
      kind: postgres-dump
      archive: dump.pgc
    objectives: {rto_seconds: 60}
    states:
      restore: {attempts: 3, backoff_initial_seconds: 1, backoff_max_seconds: 2}
    evidence: {dir: evidence, signing_key: drill.key}
    """
)


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    (tmp_path / "dump.pgc").write_bytes(b"x")
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    return tmp_path / "rb.yaml"


def drill(runbook: Path, backend: Recorder, clock: FakeClock | None = None) -> RunResult:
    def factory(_source: Any, _settings: BackendSettings) -> Recorder:
        return backend

    return run_drill(load_runbook(runbook), RunOptions(clock=clock or FakeClock(), backend_factory=factory))


def evidence_of(res: RunResult, runbook: Path) -> dict[str, Any]:
    assert res.evidence is not None and res.evidence.exists()
    statement = read_and_verify(res.evidence, load_verifiers(runbook.parent / "drill.pub"))
    predicate: dict[str, Any] = statement["predicate"]
    return predicate


@pytest.mark.parametrize(
    ("state", "error", "exit_code"),
    [
        ("preflight", PreflightError("target before backup end"), 2),
        ("restore", RestoreFailed("incompatible-restore"), 3),
        ("await_ready", DeadlineExceeded("not ready"), 3),
        ("await_ready", KeyboardInterrupt(), 130),
        ("await_ready", ValueError("a bug"), 3),
        ("connect", RestoreFailed("no endpoint"), 3),
    ],
)
def test_a_failing_state_still_tears_down_and_writes_failed_evidence(
    runbook: Path, state: str, error: BaseException, exit_code: int
) -> None:
    backend = Recorder(fail_in=state, error=error)
    res = drill(runbook, backend)
    assert res.verdict == "failed"
    assert res.exit_code == exit_code
    assert res.failed_state == state
    registered = {"preflight": [], "restore": ["a"]}.get(state, ["b", "a"])
    assert backend.torn_down == registered  # reverse order of creation, and only what was created
    ev = evidence_of(res, runbook)
    assert ev["results"]["verdict"] == "failed"
    assert ev["error"]["state"] == state
    assert ev["teardown"]["all_deleted"] is True
    assert [r["id"] for r in ev["teardown"]["resources"] if r["kind"] == "thing"] == registered
    assert ev["timeline"][-1]["state"] == "teardown"
    assert ev["interrupted"] is (exit_code == 130)


def machine(
    runbook: Path, backend: Recorder, home: Path, clock: FakeClock | None = None, probed: list[Endpoint] | None = None
) -> Drill:
    """Run the machine with stand-ins for the two database-facing seams it is handed (the connect probe and
    the validator runner), so every state after restore really runs."""
    clock = clock or FakeClock()

    def probe(ep: Endpoint) -> str:
        (probed if probed is not None else []).append(ep)
        return "16.4"

    def validators(_d: Drill) -> ValidationReport:
        return ValidationReport((Finding("smoke", "one", passed=True, expected=1, actual=1),), None, None, 5)

    loaded = load_runbook(runbook)
    d = Drill(
        loaded=loaded,
        backend=backend,
        clock=clock,
        journal=Journal.create(f"run-{len(list(home.glob('runs/*')))}", clock, home),
        run_validators=validators,
        probe=probe,
        measure=lambda d: measure(
            d.timeline, validated=True, rto_objective_s=60, rpo_objective_s=None, achieved_rpo=None, rpo_method="none"
        ),
    )
    return run_machine(d, default_states(loaded), lambda _d: None)


def isolation_checks(d: Drill) -> Any:
    return build_predicate(d, executor={}, trigger="test", host="h", initiated_by="t")["isolation_checks"]


def test_transient_errors_are_retried_with_backoff_on_the_injected_clock_and_the_drill_passes(
    runbook: Path, drill_home: Path
) -> None:
    """Two throttled restore attempts, then one that works: the drill goes on and passes.

    The machine runs with stand-ins for the two database-facing seams it is handed (the
    connect probe and the validator runner), so every state after restore really runs.
    """
    clock = FakeClock()
    backend = Recorder(fail_in="restore", error=TransientError("throttled"), transient_failures=2)
    probed: list[Endpoint] = []
    d = machine(runbook, backend, drill_home, clock, probed)

    assert (d.error, d.failed_state, verdict_of(d)) == (None, None, "passed")
    restores = [e for e in d.timeline if e.state == "restore"]
    assert [e.outcome for e in restores] == ["retry", "retry", "ok"]
    assert [e.error for e in restores] == ["TransientError: try again", "TransientError: try again", None]
    assert backend.calls == ["preflight", "restore", "restore", "restore", "await_ready", "verify_isolation", "connect"]
    # the two backoffs were slept on the injected clock, within the runbook's 1..2 s policy, between the attempts
    backoffs = clock.sleeps[:2]
    assert clock.sleeps[2:] == [0.0]  # the recorder's await_ready "waits" its restore_takes_s
    assert all(0 < s <= 2.0 for s in backoffs)
    gaps = [(b.start_ns - a.end_ns) / 1e9 for a, b in itertools.pairwise(restores)]
    assert gaps == pytest.approx(backoffs)
    assert [e.state for e in d.timeline if e.outcome == "ok"] == [
        "preflight",
        "restore",
        "await_ready",
        "connect",
        "validate",
        "measure",
        "teardown",
    ]
    assert len(probed) == 1 and d.server_version == "16.4"
    assert backend.torn_down == ["b", "a"]  # the retried restore registered "a" three times: torn down once


def test_each_step_is_handed_what_the_step_before_returned(runbook: Path, drill_home: Path) -> None:
    """preflight's plan to restore, restore's value to await_ready, the ready value to isolation and the endpoint."""
    backend = Recorder()
    d = machine(runbook, backend, drill_home)
    assert (d.error, verdict_of(d)) == (None, "passed")
    assert backend.received == [
        ("restore", Handed("plan")),
        ("await_ready", Handed("restored")),
        ("verify_isolation", Handed("ready")),
        ("endpoint", Handed("ready")),
    ]


def test_the_evidence_records_verify_isolation_facts_as_they_are(runbook: Path, drill_home: Path) -> None:
    facts = [
        Fact("listen_addresses", "restored server", True, "no TCP listener", value=""),
        Fact("no-egress-route", "subnet-1", True, "local route only"),  # decided without a value read back
    ]
    d = machine(runbook, Recorder(isolation=facts), drill_home)
    assert (d.error, verdict_of(d)) == (None, "passed")
    assert isolation_checks(d) == [
        {"check": "listen_addresses", "subject": "restored server", "value": "", "passed": True,
         "detail": "no TCP listener"},
        {"check": "no-egress-route", "subject": "subnet-1", "passed": True, "detail": "local route only"},
    ]  # fmt: skip


def test_a_failed_isolation_fact_fails_the_drill_even_when_the_backend_does_not_raise(runbook: Path) -> None:
    """The hostile backend: it reports a listener on every address and carries on. No validator may run on it."""
    open_door = Fact("listen_addresses", "restored server", False, "listens on every address", value="*")
    backend = Recorder(isolation=[Fact("archive_mode_off", "restored server", True, "off", value="off"), open_door])
    res = drill(runbook, backend)
    assert (res.verdict, res.exit_code, res.failed_state) == ("failed", 3, "await_ready")
    assert isinstance(res.drill.error, IsolationError) and "listen_addresses" in str(res.drill.error)
    assert "connect" not in backend.calls and res.drill.validation is None
    assert backend.torn_down == ["b", "a"]
    ev = evidence_of(res, runbook)
    assert [(c["check"], c["passed"]) for c in ev["isolation_checks"]] == [
        ("archive_mode_off", True),
        ("listen_addresses", False),
    ]
    assert ev["error"]["type"] == "IsolationError" and ev["teardown"]["all_deleted"] is True


def test_an_isolation_refusal_before_restoring_leaves_its_facts_in_the_evidence(runbook: Path) -> None:
    """AWS proves the network before it creates anything: the facts that refused the drill are the evidence."""
    facts = (Fact("no-egress-route", "rtb-1", False, "0.0.0.0/0 via igw-1"), Fact("same-vpc", "vpc-1", True, "ok"))
    backend = Recorder(fail_in="preflight", error=IsolationError("isolation not proven", facts=facts))
    res = drill(runbook, backend)
    assert (res.verdict, res.exit_code, res.failed_state) == ("failed", 3, "preflight")
    assert backend.torn_down == [] and backend.received == []  # nothing restored
    checks = evidence_of(res, runbook)["isolation_checks"]
    assert [(c["check"], c["subject"], c["passed"]) for c in checks] == [
        ("no-egress-route", "rtb-1", False),
        ("same-vpc", "vpc-1", True),
    ]


def test_retries_stop_at_the_runbook_attempts(runbook: Path) -> None:
    backend = Recorder(fail_in="restore", error=TransientError("throttled"), transient_failures=10)
    res = drill(runbook, backend)
    assert [e.outcome for e in res.drill.timeline if e.state == "restore"] == ["retry"] * 3
    assert res.failed_state == "restore" and res.exit_code == 3


def test_a_two_hour_restore_is_timed_in_milliseconds_of_test_time(runbook: Path) -> None:
    (runbook.parent / "rb.yaml").write_text(RUNBOOK.replace("rto_seconds: 60", "rto_seconds: 10800"))
    backend = Recorder(fail_in="connect", restore_takes_s=7200)
    res = drill(runbook, backend)
    phases = res.drill.measurement
    assert phases is None  # connect failed: no measurement
    await_entry = next(e for e in res.drill.timeline if e.state == "await_ready")
    assert await_entry.duration_ms == 7_200_000


def test_past_the_drill_deadline_is_a_failure(runbook: Path) -> None:
    # default deadline is 3x the RTO objective (180 s); the restore "takes" an hour
    backend = Recorder(fail_in="connect", restore_takes_s=3600)
    res = drill(runbook, backend)
    assert res.failed_state == "await_ready"
    assert "DeadlineExceeded" in (res.error or "")
    assert backend.torn_down == ["b", "a"]


def test_the_journal_records_each_resource_before_teardown_and_its_removal(runbook: Path, drill_home: Path) -> None:
    backend = Recorder(fail_in="connect")
    res = drill(runbook, backend)
    events = read_events(drill_home / "runs" / res.run_id / "journal.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started"
    thing_a = next(i for i, e in enumerate(events) if e.get("resource", {}).get("id") == "a")
    restore_entered = next(i for i, e in enumerate(events) if e.get("state") == "restore")
    assert events[thing_a]["event"] == "resource_registered" and restore_entered < thing_a
    assert kinds.count("resource_removed") == 3  # a, b and the scratch dir
    assert kinds[-1] == "run_finished"
    s = summarize(res.run_id, events)
    assert s.status == "finished" and s.outstanding == []
    for line in (drill_home / "runs" / res.run_id / "journal.jsonl").read_text().splitlines():
        json.loads(line)  # every line is complete JSON


def test_each_drill_links_to_the_previous_one_of_its_runbook(runbook: Path) -> None:
    import hashlib

    first = drill(runbook, Recorder(fail_in="connect"))
    second = drill(runbook, Recorder(fail_in="restore"))
    one, two = evidence_of(first, runbook), evidence_of(second, runbook)
    assert one["chain"]["seq"] == 1 and one["previous_drill"] is None
    assert two["chain"]["seq"] == 2
    assert two["previous_drill"]["id"] == first.run_id
    assert first.evidence is not None
    assert two["chain"]["prev_envelope_sha256"] == hashlib.sha256(first.evidence.read_bytes()).hexdigest()


def test_report_renders_what_was_signed(runbook: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from drills.cli import main

    res = drill(runbook, Recorder(fail_in="connect"))
    assert res.evidence is not None
    assert main(["report", str(res.evidence), "--key", str(runbook.parent / "drill.pub")]) == 0
    text = capsys.readouterr().out
    assert f"# Restore drill {res.run_id}: FAILED" in text
    assert "| await_ready | 1 |" in text and "RestoreFailed: injected" in text
    assert "signature verified with key `sha256:" in text
    tampered = res.evidence.read_text().replace('"sig": "', '"sig": "A', 1)
    res.evidence.write_text(tampered)
    assert main(["report", str(res.evidence), "--key", str(runbook.parent / "drill.pub")]) == 1
