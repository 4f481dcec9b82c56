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
from recorder import Recorder

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings
from drills.clock import FakeClock
from drills.errors import DeadlineExceeded, PreflightError, RestoreFailed, TransientError
from drills.evidence.keys import generate_keypair, load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import Journal, read_events, summarize
from drills.machine import Drill, default_states, run_machine
from drills.measure import measure
from drills.record import verdict_of
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

    def probe(ep: Endpoint) -> str:
        probed.append(ep)
        return "16.4"

    def validators(_d: Drill) -> ValidationReport:
        return ValidationReport((Finding("smoke", "one", passed=True, expected=1, actual=1),), None, None, 5)

    loaded = load_runbook(runbook)
    d = Drill(
        loaded=loaded,
        backend=backend,
        clock=clock,
        journal=Journal.create("run-transient", clock, drill_home),
        run_validators=validators,
        probe=probe,
        measure=lambda d: measure(
            d.timeline, validated=True, rto_objective_s=60, rpo_objective_s=None, achieved_rpo=None, rpo_method="none"
        ),
    )
    run_machine(d, default_states(loaded), lambda _d: None)

    assert (d.error, d.failed_state, verdict_of(d)) == (None, None, "passed")
    restores = [e for e in d.timeline if e.state == "restore"]
    assert [e.outcome for e in restores] == ["retry", "retry", "ok"]
    assert [e.error for e in restores] == ["TransientError: try again", "TransientError: try again", None]
    assert backend.calls == ["preflight", "restore", "restore", "restore", "await_ready", "connect"]
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
