"""A journal that lies, a journal that cannot be written, a umask of 000: real PostgreSQL drills.

A forged journal may name any binary and any pid; ``drill teardown`` must run
neither and signal nothing that is not the server its run started. A full
journal disk (a real 64 KiB tmpfs) must not stop a drill from tearing down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tmpfs import small_tmpfs

from drills.api import RunOptions, run_drill
from drills.cleanup import finish_teardown
from drills.demo.postgres import DemoSource
from drills.engines.postgres.server import find_pg_binaries, run_as_for_server
from drills.evidence.keys import load_verifiers
from drills.evidence.store import read_and_verify
from drills.journal import Journal, read_events, summarize
from drills.osutil import identity_of
from drills.runbook import load_runbook

pytestmark = pytest.mark.postgres


def drill_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "RESTORE_DRILLS_HOME": str(home)},
    )


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def no_server_left(run_id: str) -> bool:
    out = subprocess.run(["pgrep", "-af", "postgres"], capture_output=True, text=True, check=False).stdout
    return run_id not in out


# ------------------------------------------------------------------ a forged journal

EVIL = """#!/bin/sh
echo "ran $0 $*" >> {marker}
"""


def _as_server_user() -> dict[str, Any]:
    run_as = run_as_for_server()
    return {} if run_as is None else {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


@pytest.fixture
def forge_dir() -> Iterator[Path]:
    """Where the forgery lives: reachable by the server user, so a script it names *could* run as them."""
    base = Path(tempfile.mkdtemp(prefix="rd-forged-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def bystanders() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the forged journals point at; each must still be running at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _forge(
    tmp_path: Path,
    home: Path,
    victim: subprocess.Popen[bytes],
    *,
    start_ticks_delta: int = 0,
    as_server_user: bool = True,
) -> tuple[str, Path, Path]:
    """A journal that points teardown at a script (as its bindir) and at ``victim`` (as its server).

    Forged as well as it can be: the journaled pid, start time, boot id and
    owner are read from the victim's own /proc entry (shifted by
    ``start_ticks_delta`` to play a reused pid), the layout is ours.
    """
    run_id = "20260101T000000Z-f0f0f0"
    marks = tmp_path / "marks"
    marks.mkdir()
    marks.chmod(0o1777)  # whoever the script would run as could leave its mark
    marker = marks / "marker"
    evil = tmp_path / "evil"
    evil.mkdir()
    evil.chmod(0o755)
    for name in ("pg_ctl", "postgres", "initdb"):
        (evil / name).write_text(EVIL.format(marker=marker))
        (evil / name).chmod(0o755)
    root = tmp_path / f"restore-drill-{run_id}" / "pg"
    (root / "data").mkdir(parents=True)
    root.parent.chmod(0o755)
    root.chmod(0o755)
    (root / "data" / "postmaster.pid").write_text(f"{victim.pid}\n{root / 'data'}\n")
    ident = identity_of(victim.pid)
    assert ident is not None
    run_as = run_as_for_server() if as_server_user else None  # None: "the server ran as the runner" (root)
    attrs = {
        "root": str(root),
        "datadir": str(root / "data"),
        "socket_dir": str(root / "sock"),
        "port": 5999,
        "bindir": str(evil),
        "major": find_pg_binaries().major,
        "run_as": run_as.name if run_as else None,
        "pid": victim.pid,
        "pid_start_ticks": ident.start_ticks + start_ticks_delta,
        "boot_id": ident.boot_id,
        "pid_uid": ident.uid,
    }
    j = Journal.create(run_id, _clock(), home)
    j.append("run_started", runbook={"name": "forged"}, source={"kind": "postgres-dump", "archive": "/x.pgc"})
    resource = {"kind": "postgres-server", "id": str(root / "data"), "backend": "local-postgres", "attrs": attrs}
    j.append("resource_registered", resource=resource)
    j.close()
    return run_id, marker, root


def _clock() -> Any:
    from drills.clock import SystemClock

    return SystemClock()


@pytest.mark.parametrize("as_server_user", [True, False], ids=["run_as-server-user", "run_as-null"])
def test_a_forged_journal_runs_no_binary_and_signals_no_stranger(
    forge_dir: Path, drill_home: Path, bystanders: list[subprocess.Popen[bytes]], as_server_user: bool
) -> None:
    # the stranger runs as the user the journal names, and the journal carries its real start time:
    # only the command line (which does not name the data directory) tells it apart
    stranger = subprocess.Popen(
        ["sleep", "300"], start_new_session=True, **(_as_server_user() if as_server_user else {})
    )
    bystanders.append(stranger)
    time.sleep(0.05)
    run_id, marker, root = _forge(forge_dir, drill_home, stranger, as_server_user=as_server_user)
    res = drill_cli("teardown", run_id, home=drill_home)
    assert res.returncode == 0, res.stderr
    assert not marker.exists()  # no binary named by the journal ran
    assert stranger.poll() is None  # the stranger was not signalled ...
    assert f"pid {stranger.pid} not signalled" in res.stdout and "does not name" in res.stdout  # ... and we say so
    assert not root.exists()  # nothing runs on the directory: it is removed


def test_a_reused_pid_naming_the_data_directory_is_not_signalled_and_keeps_it(
    forge_dir: Path, drill_home: Path, bystanders: list[subprocess.Popen[bytes]]
) -> None:
    run_id = "20260101T000000Z-f0f0f0"
    datadir = forge_dir / f"restore-drill-{run_id}" / "pg" / "data"
    # `; true` keeps the shell from exec'ing sleep: its command line goes on naming the data directory
    impostor = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 300; true", str(datadir)], start_new_session=True, **_as_server_user()
    )
    bystanders.append(impostor)
    time.sleep(0.05)
    # owner and command line match; the start time is not the one journaled at launch
    _, marker, root = _forge(forge_dir, drill_home, impostor, start_ticks_delta=-100)
    res = drill_cli("teardown", run_id, home=drill_home)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "start time is not the one journaled at launch" in res.stderr
    assert impostor.poll() is None and root.exists() and not marker.exists()


@pytest.mark.parametrize("tamper", ["home-world-writable", "journal-group-writable", "journal-of-another-user"])
def test_a_forged_journal_in_an_untrusted_place_is_refused_before_anything(
    forge_dir: Path, drill_home: Path, bystanders: list[subprocess.Popen[bytes]], tamper: str
) -> None:
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    bystanders.append(victim)
    time.sleep(0.05)
    run_id, marker, root = _forge(forge_dir, drill_home, victim)
    # the victim now *is* what the journal says (our uid, our command line would not match, but
    # nothing may even be looked at): what decides is who could have written the journal
    journal = drill_home / "runs" / run_id / "journal.jsonl"
    if tamper == "home-world-writable":
        drill_home.chmod(0o777)
    elif tamper == "journal-group-writable":
        journal.chmod(0o620)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to give the journal away")
        os.chown(journal, 65534, 65534)
    res = drill_cli("teardown", run_id, home=drill_home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "PreflightError" in res.stderr and ("writable by" in res.stderr or "belongs to" in res.stderr)
    assert not marker.exists() and victim.poll() is None and (root / "data" / "postmaster.pid").exists()


# ------------------------------------------------------------------ umask 000


def test_under_umask_000_the_journal_home_and_server_log_stay_private(
    demo_source: DemoSource, drill_home: Path
) -> None:
    old = os.umask(0)
    try:
        res = run_drill(load_runbook(demo_source.runbook), RunOptions(keep_seconds=600))  # kept: look inside
    finally:
        os.umask(old)
    try:
        assert res.verdict == "passed", res.to_json()
        run_dir = drill_home / "runs" / res.run_id
        assert mode(drill_home) == 0o700 and mode(drill_home / "runs") == 0o700 and mode(run_dir) == 0o700
        assert mode(run_dir / "journal.jsonl") == 0o600
        server = next(r for r in res.drill.resources if r.kind == "postgres-server")
        log = Path(server.attrs["root"]) / "server.log"
        assert log.stat().st_size > 0 and mode(log) == 0o600  # the server wrote into it, and it stayed 0600
        assert server.attrs["pid"] and server.attrs["pid_start_ticks"]  # journaled at launch
        journaled = summarize(res.run_id, read_events(run_dir / "journal.jsonl")).outstanding
        assert any(r.attrs.get("pid") == server.attrs["pid"] for r in journaled)
    finally:
        finish_teardown(res.run_id)
    assert no_server_left(res.run_id)


# ------------------------------------------------------------------ a full journal disk

HARNESS = """
import json, sys
from pathlib import Path
from drills.api import RunOptions, run_drill
from drills.engines.postgres.backend import LocalPostgres
from drills.runbook import load_runbook
from drills.logs import configure
sys.path.insert(0, sys.argv[3])
from tmpfs import fill_after

configure("json")
mnt = Path(sys.argv[2])

class FillsTheDisk(LocalPostgres):
    def await_ready(self, restored, ctx):
        ready = super().await_ready(restored, ctx)  # the restored server is up and journaled ...
        (journal,) = (mnt / "home").glob("runs/*/journal.jsonl")
        fill_after(journal, mnt / "filler")  # ... and now the journal's disk is full
        return ready

res = run_drill(load_runbook(sys.argv[1]), RunOptions(home=mnt / "home", backend_factory=FillsTheDisk))
print(json.dumps({"exit": res.exit_code, "run_id": res.run_id, "evidence": str(res.evidence),
                  "journal_errors": res.drill.journal_errors, "error": res.error,
                  "teardown": [r.to_dict() for r in res.drill.teardown_results]}))
sys.exit(res.exit_code)
"""


def test_a_full_journal_disk_still_tears_down_the_restored_server_and_exits_3(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    work = tmp_path / "d"
    shutil.copytree(demo_source.workdir, work, ignore=shutil.ignore_patterns("source", "evidence"))
    work.chmod(0o755)
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    tests_dir = str(Path(__file__).resolve().parents[1])
    with small_tmpfs(tmp_path / "mnt") as mnt:
        proc = subprocess.run(
            [sys.executable, str(script), str(work / "runbook.yaml"), str(mnt), tests_dir],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert proc.returncode == 3 and out["exit"] == 3, out
        assert "could not be written" in out["error"] and "No space left on device" in out["error"]
        assert out["journal_errors"] and all("No space left on device" in e for e in out["journal_errors"])
        assert {t["kind"] for t in out["teardown"]} == {"postgres-server", "scratch-dir"}
        assert all(t["deleted"] for t in out["teardown"]), out["teardown"]
        assert no_server_left(out["run_id"])
        assert not (Path(tempfile.gettempdir()) / f"restore-drill-{out['run_id']}").exists()
        ev = read_and_verify(Path(out["evidence"]), load_verifiers(work / "keys" / "drill.pub"))["predicate"]
        assert ev["teardown"]["all_deleted"] is True and ev["results"]["verdict"] == "failed"

        journal = mnt / "home" / "runs" / out["run_id"] / "journal.jsonl"
        data = journal.read_bytes()
        assert data.endswith(b"\n") and len(read_events(journal)) == data.count(b"\n")  # no torn line
        # the journal never learnt of the removals: once there is room, `drill teardown` finds nothing left
        (mnt / "filler").unlink()
        td = drill_cli("teardown", out["run_id"], home=mnt / "home")
        assert td.returncode == 0, td.stderr
        assert "removed" in td.stdout
        after = summarize(out["run_id"], read_events(journal))
        assert after.outstanding == []
