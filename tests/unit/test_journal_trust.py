"""The journal is trusted only as far as nobody else could have written it, and never tears.

Real files, real modes, a real full tmpfs: nothing here is mocked. Tests that
hand a directory to another user need root (as the test machine runs).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recorder import Recorder
from tmpfs import fill_after, small_tmpfs

from drills.api import RunOptions, RunResult, run_drill
from drills.backends.base import BackendSettings, StepContext
from drills.clock import FakeClock
from drills.errors import InfrastructureError, PreflightError, TransientError
from drills.evidence.keys import generate_keypair
from drills.journal import Journal, list_runs, read_events, secure_home
from drills.resources import Resource, TeardownResult
from drills.runbook import load_runbook

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory to another user needs root")


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


# ------------------------------------------------------------------ modes


def test_home_run_dir_and_journal_are_private_whatever_the_umask(tmp_path: Path, umask_000: None) -> None:
    home = tmp_path / "a" / "b" / "home"  # missing parents too
    j = Journal.create("20260101T000000Z-aaaaaa", FakeClock(), home)
    j.append("hello")
    j.close()
    assert mode(home) == 0o700 and mode(home / "runs") == 0o700
    assert mode(j.path.parent) == 0o700 and mode(j.path) == 0o600
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700


def test_an_existing_home_of_ours_is_tightened_to_0700(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    secure_home(home)
    assert mode(home) == 0o700


# ------------------------------------------------------------------ refusals


@needs_root
def test_a_home_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, nobody().pw_uid, nobody().pw_gid)
    with pytest.raises(PreflightError) as err:
        Journal.create("r1", FakeClock(), home)
    assert str(home) in str(err.value) and "belongs to nobody" in str(err.value)
    assert err.value.exit_code == 2
    assert not (home / "runs").exists()  # nothing was written into it


@pytest.mark.parametrize("bits", [0o777, 0o770, 0o702])
def test_a_home_others_can_write_is_refused(tmp_path: Path, bits: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(bits)
    with pytest.raises(PreflightError, match=r"writable by .* \(mode 0\d{3}\)"):
        Journal.create("r1", FakeClock(), home)
    assert mode(home) == bits  # refused, not silently "fixed": someone may already have written in it


def test_a_home_inside_a_world_writable_dir_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename our home away and put theirs in its place
    home = shared / "home"
    home.mkdir(mode=0o700)
    with pytest.raises(PreflightError, match="without the sticky bit"):
        Journal.create("r1", FakeClock(), home)
    shared.chmod(0o1777)  # like /tmp: others cannot rename what is ours
    Journal.create("r1", FakeClock(), home).close()


def test_a_home_reached_through_a_symlink_into_a_world_writable_dir_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "home").mkdir(mode=0o700)
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    (safe / "home").symlink_to(shared / "home")
    with pytest.raises(PreflightError, match="without the sticky bit"):
        secure_home(safe / "home")


@needs_root
def test_a_journal_someone_else_owns_or_can_write_is_refused_by_teardown_and_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    j = Journal.create("20260101T000000Z-bbbbbb", FakeClock(), home)
    j.append("run_started", runbook={"name": "x"})
    j.close()
    j.path.chmod(0o666)  # hostile on purpose
    with pytest.raises(PreflightError, match="journal is writable by its group and others"):
        Journal.reopen(j.run_id, FakeClock(), home)
    assert list(list_runs(home)) == []  # skipped by `drill runs`, never folded into a summary
    os.chmod(j.path, 0o600)
    os.chown(j.path, nobody().pw_uid, nobody().pw_gid)
    with pytest.raises(PreflightError, match="journal belongs to nobody"):
        Journal.reopen(j.run_id, FakeClock(), home)


def test_a_journal_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    j = Journal.create("r1", FakeClock(), home)
    j.close()
    elsewhere = tmp_path / "planted.jsonl"
    elsewhere.write_text("")
    j.path.unlink()
    j.path.symlink_to(elsewhere)
    with pytest.raises(PreflightError, match="cannot open the journal"):
        Journal.reopen("r1", FakeClock(), home)


def test_drill_teardown_on_an_untrusted_home_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Journal.create("20260101T000000Z-cccccc", FakeClock(), home).close()
    home.chmod(0o777)
    proc = subprocess.run(
        [sys.executable, "-m", "drills.cli", "teardown", "20260101T000000Z-cccccc"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RESTORE_DRILLS_HOME": str(home)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(home) in lines[0] and "writable by" in lines[0] and "chmod go-w" in lines[0]


# ------------------------------------------------------------------ torn lines


def test_a_torn_last_line_is_cut_on_open_and_the_next_event_is_whole(tmp_path: Path) -> None:
    home = tmp_path / "home"
    j = Journal.create("r1", FakeClock(), home)
    j.append("run_started")
    j.append("state_entered", state="restore")
    j.close()
    with j.path.open("a") as fh:
        fh.write('{"at": "2026-01-01T00:00:00.000Z", "event": "resource_regis')  # SIGKILL mid-write
    assert [e["event"] for e in read_events(j.path)] == ["run_started", "state_entered"]  # tolerated
    again = Journal.reopen("r1", FakeClock(), home)
    assert again.repaired_bytes > 0
    again.append("teardown_resumed")
    again.close()
    assert [e["event"] for e in read_events(j.path)] == ["run_started", "state_entered", "teardown_resumed"]
    assert [e["seq"] for e in read_events(j.path)] == [1, 2, 3]


def test_read_events_keeps_the_whole_event_a_torn_line_was_glued_to(tmp_path: Path) -> None:
    p = tmp_path / "journal.jsonl"
    whole = json.dumps({"at": "t", "event": "resource_removed", "seq": 3}, sort_keys=True)
    p.write_text('{"at": "t", "event": "run_started", "seq": 1}\n{"at": "t", "ev' + whole + "\n")
    assert [e["event"] for e in read_events(p)] == ["run_started", "resource_removed"]


# ------------------------------------------------------------------ a full disk


def test_a_failed_append_leaves_no_torn_line_and_is_raised_or_collected(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        j = Journal.create("r1", FakeClock(), mnt / "home")
        j.append("run_started")
        fill_after(j.path, mnt / "filler")
        with pytest.raises(InfrastructureError, match=r"could not be written .*No space left"):
            j.append("state_entered", state="x" * 5000)  # bigger than a page: a partial write is possible
        j.best_effort = True
        j.append("teardown_started")  # collected, not raised
        assert len(j.errors) == 2 and all("No space left on device" in e for e in j.errors)
        data = j.path.read_bytes()
        assert data.endswith(b"\n")
        assert [e["event"] for e in read_events(j.path)] == ["run_started", "test_padding"]
        (mnt / "filler").unlink()
        j.append("teardown_finished")  # room again: the next line starts clean
        j.close()
        assert [e["event"] for e in read_events(j.path)][-1] == "teardown_finished"


# ------------------------------------------------------------------ through the machine

RUNBOOK = """\
name: journal-test
source: {kind: postgres-dump, archive: dump.pgc}
objectives: {rto_seconds: 60}
states:
  restore: {attempts: 3, backoff_initial_seconds: 1, backoff_max_seconds: 2}
evidence: {dir: evidence, signing_key: drill.key}
"""


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    (tmp_path / "dump.pgc").write_bytes(b"x")
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    return tmp_path / "rb.yaml"


def drill(runbook: Path, backend: Any, home: Path | None = None) -> RunResult:
    def factory(_source: Any, _settings: BackendSettings) -> Any:
        return backend

    return run_drill(load_runbook(runbook), RunOptions(clock=FakeClock(), backend_factory=factory, home=home))


def test_a_retried_restore_journals_its_resource_once_and_tears_it_down_once(runbook: Path, drill_home: Path) -> None:
    backend = Recorder(fail_in="restore", error=TransientError("throttled"), transient_failures=2)
    res = drill(runbook, backend)  # restore registers "a" on each of its 3 attempts
    assert [e.outcome for e in res.drill.timeline if e.state == "restore"] == ["retry", "retry", "ok"]
    events = read_events(drill_home / "runs" / res.run_id / "journal.jsonl")
    registered = [e["resource"]["id"] for e in events if e["event"] == "resource_registered"]
    assert registered.count("a") == 1 and registered.count("b") == 1
    assert backend.torn_down == ["b", "a"]


class _FillsTheDiskInTeardown(Recorder):
    """Tears down for real (records it), and fills the journal's disk on the first resource."""

    def __init__(self, journal_dir: Path, filler: Path) -> None:
        super().__init__(fail_in="connect")
        self.journal_dir = journal_dir
        self.filler = filler

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        if not self.torn_down:
            (journal,) = self.journal_dir.glob("runs/*/journal.jsonl")
            fill_after(journal, self.filler)
        return super().teardown(resource, ctx)


def test_a_full_journal_disk_during_teardown_still_tears_everything_down_and_exits_3(
    runbook: Path, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        backend = _FillsTheDiskInTeardown(mnt / "home", mnt / "filler")
        res = drill(runbook, backend, home=mnt / "home")
        assert backend.torn_down == ["b", "a"]
        scratch = [r for r in res.drill.teardown_results if r.resource.kind == "scratch-dir"]
        assert scratch and scratch[0].deleted and not Path(scratch[0].resource.id).exists()
        assert res.exit_code == 3
        errors = res.drill.journal_errors
        assert errors and all("No space left on device" in e for e in errors)
        assert any(e.startswith("resource_removed") for e in errors)
        assert res.evidence is not None and res.evidence.exists()  # the evidence lives elsewhere
        (journal,) = (mnt / "home").glob("runs/*/journal.jsonl")
        assert journal.read_bytes().endswith(b"\n")
        lines = journal.read_text().splitlines()
        assert len(read_events(journal)) == len(lines)  # every line whole
