"""The evidence trail through the real `drill` command: concurrent drills, planted records, `verify --chain`.

The runbook restores a pg_dump archive that is not one: preflight finds the backup defect, so each
drill is a real `drill run` (journal, machine, teardown, signed evidence, chain append) that costs
half a second and no server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from drills.engines.postgres.server import find_pg_binaries
from drills.errors import PreflightError
from drills.evidence import generate_keypair, keyring_entry, load_signer, subject_for_bytes, write_evidence

RUNBOOK = """\
name: trail
source: {kind: postgres-dump, archive: dump.pgc}
objectives: {rto_seconds: 60}
evidence: {dir: evidence, signing_key: drill.key}
"""


@pytest.fixture
def work(tmp_path: Path) -> Path:
    try:
        find_pg_binaries()  # pg_restore reads the archive in preflight
    except PreflightError as exc:
        pytest.skip(str(exc))
    (tmp_path / "dump.pgc").write_bytes(b"not a dump")
    generate_keypair(tmp_path / "drill.key")
    (tmp_path / "rb.yaml").write_text(RUNBOOK)
    return tmp_path


def drill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "drills.cli", *args]


def env(work: Path) -> dict[str, str]:
    return {**os.environ, "RESTORE_DRILLS_HOME": str(work / "home")}


def drill(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        drill_cmd(*args), capture_output=True, text=True, timeout=120, check=False, env=env(work), cwd=work
    )


def predicates(directory: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in directory.glob("*.evidence.json"):
        statement = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
        out[path.name] = statement["predicate"]
    return out


def test_eight_drills_at_once_make_one_chain_seq_1_to_8(work: Path) -> None:
    procs = [
        subprocess.Popen(
            drill_cmd("run", "rb.yaml", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(work),
            cwd=work,
        )
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1] * 8, [err[-500:] for _, err in outs]  # the backup defect
    records = predicates(work / "evidence")
    assert len(records) == 8
    by_seq = {p["chain"]["seq"]: (name, p) for name, p in records.items()}
    assert sorted(by_seq) == list(range(1, 9))
    assert by_seq[1][1]["chain"]["prev_envelope_sha256"] is None
    for seq in range(2, 9):
        prev_file = work / "evidence" / by_seq[seq - 1][0]
        assert by_seq[seq][1]["chain"]["prev_envelope_sha256"] == hashlib.sha256(prev_file.read_bytes()).hexdigest()
        assert by_seq[seq][1]["drill"]["finished_at"] >= by_seq[seq - 1][1]["drill"]["finished_at"]
    res = drill(work, "verify", "--chain", "evidence", "--key", "drill.pub")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "runbook trail: 8 trusted record(s), seq 1..8: OK" in res.stdout


def test_records_planted_with_another_key_are_reported_not_linked(work: Path) -> None:
    assert drill(work, "run", "rb.yaml").returncode == 1
    generate_keypair(work / "attacker.key")
    attacker = load_signer(work / "attacker.key")
    for seq in range(999, 1004):
        fake = {
            "drill": {"id": f"planted-{seq}", "finished_at": "2026-11-30T00:00:00.000Z"},
            "runbook": {"name": "trail"},
            "results": {"verdict": "passed", "achieved_rto_ms": 10},
            "chain": {"id": "runbook:trail", "seq": seq},
        }
        subjects = [subject_for_bytes("runbook:trail", b"x")]
        write_evidence(fake, subjects, work / "evidence", f"planted-{seq}", attacker)

    res = drill(work, "run", "rb.yaml", "--json")
    assert res.returncode == 1, res.stderr[-1000:]
    record = predicates(work / "evidence")[Path(json.loads(res.stdout)["evidence"]).name]
    assert record["chain"]["seq"] == 2
    untrusted = [d["file"] for d in record["evidence_trail"]["deviations"] if d["kind"] == "untrusted"]
    assert sorted(untrusted) == sorted(f"planted-{seq}.evidence.json" for seq in range(999, 1004))

    audit = drill(work, "verify", "--chain", "evidence", "--key", "drill.pub")
    assert audit.returncode == 1
    assert audit.stdout.count("UNTRUSTED: planted-") == 5 and "2 trusted record(s), seq 1..2" in audit.stdout


def test_after_a_key_rotation_trusted_keys_keep_the_old_records_in_the_chain(work: Path) -> None:
    assert drill(work, "run", "rb.yaml").returncode == 1
    (work / "drill.key").rename(work / "old.key")
    (work / "drill.pub").rename(work / "old.pub")
    generate_keypair(work / "new.key")
    (work / "rb.yaml").write_text(
        RUNBOOK.replace("signing_key: drill.key", "signing_key: new.key, trusted_keys: old.pub")
    )
    res = drill(work, "run", "rb.yaml", "--json")
    record = predicates(work / "evidence")[Path(json.loads(res.stdout)["evidence"]).name]
    assert record["chain"]["seq"] == 2 and record["evidence_trail"]["deviations"] == []
    ring = work / "ring.json"
    ring.write_text(json.dumps({"keys": [keyring_entry(work / "old.pub"), keyring_entry(work / "new.pub")]}))
    audit = drill(work, "verify", "--chain", "evidence", "--keyring", str(ring))
    assert audit.returncode == 0, audit.stdout
    assert drill(work, "verify", "--chain", "evidence", "--key", "new.pub").returncode == 1  # old records unknown


def test_verify_chain_exits_1_on_a_deleted_record_and_2_on_bad_input(work: Path) -> None:
    for _ in range(3):
        assert drill(work, "run", "rb.yaml").returncode == 1
    records = predicates(work / "evidence")
    middle = next(name for name, p in records.items() if p["chain"]["seq"] == 2)
    (work / "evidence" / middle).unlink()
    res = drill(work, "verify", "--chain", "evidence", "--key", "drill.pub")
    assert res.returncode == 1 and "GAP: seq 2 missing of 1..3" in res.stdout

    assert drill(work, "verify", "--chain", "nowhere", "--key", "drill.pub").returncode == 2
    assert drill(work, "verify", "x.evidence.json", "--chain", "evidence", "--key", "drill.pub").returncode == 2
    assert drill(work, "verify", "--chain", "evidence", "--key", "drill.pub", "--head-digest", "abc").returncode == 2
    assert drill(work, "verify", "--key", "drill.pub").returncode == 2
    (work / "empty").mkdir()
    assert drill(work, "verify", "--chain", "empty", "--key", "drill.pub").returncode == 2
    first = next(iter(records))
    pinned_alone = drill(work, "verify", f"evidence/{first}", "--key", "drill.pub", "--head-digest", "0" * 64)
    assert pinned_alone.returncode == 2 and "use it with --chain" in pinned_alone.stderr


def test_verify_refuses_a_renamed_file_and_a_signature_without_keyid(work: Path) -> None:
    for _ in range(2):
        assert drill(work, "run", "rb.yaml").returncode == 1
    first, second = sorted((work / "evidence").glob("*.evidence.json"))
    shutil.copy(second, first)  # the other run's valid envelope under this run's name
    res = drill(work, "verify", str(first), "--key", "drill.pub")
    assert res.returncode == 1 and "renamed" in res.stderr
    envelope = json.loads(second.read_text())
    del envelope["signatures"][0]["keyid"]
    second.write_text(json.dumps(envelope, indent=2, sort_keys=True) + "\n")
    res = drill(work, "verify", str(second), "--key", "drill.pub")
    assert res.returncode == 1 and "no keyid" in res.stderr


# --------------------------------------------------------------------------- every run leaves a record

KILLABLE = """\
import sys
import time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from recorder import Recorder
from drills.api import RunOptions, run_drill
from drills.runbook import load_runbook
backend = Recorder(restore_takes_s=600)  # await_ready waits ten minutes: long enough to be killed in it
run_drill(load_runbook(sys.argv[1]), RunOptions(backend_factory=lambda s, st: backend, scratch_root=Path(sys.argv[3])))
"""


def killed_run(work: Path) -> str:
    """Start a drill, SIGKILL it while it waits in await_ready, and return its run id."""
    script = work / "killable.py"
    script.write_text(KILLABLE)
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    tests_dir = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work / "rb.yaml"), str(tests_dir), str(scratch)], env=env(work), cwd=work
    )
    try:
        for _ in range(300):
            journals = list((work / "home" / "runs").glob("*/journal.jsonl")) if (work / "home").exists() else []
            fresh = [
                j for j in journals if '"state": "await_ready"' in j.read_text() and "run_finished" not in j.read_text()
            ]
            if fresh:
                break
            assert proc.poll() is None, "the drill ended before it could be killed"
            time.sleep(0.05)
        else:
            raise AssertionError("the drill never reached await_ready")
    finally:
        proc.kill()
        proc.wait()
    return fresh[0].parent.name


def test_a_killed_run_gets_a_signed_aborted_record_from_drill_teardown(work: Path) -> None:
    run_id = killed_run(work)
    assert not (work / "evidence" / f"{run_id}.evidence.json").exists()  # the kill left no record

    res = drill(work, "teardown", run_id)
    assert res.returncode == 3, res.stderr  # the recorder's resources have no backend to remove them after a crash
    assert f"run {run_id} was aborted: signed record" in res.stdout
    path = work / "evidence" / f"{run_id}.evidence.json"
    assert drill(work, "verify", str(path), "--key", "drill.pub").returncode == 0
    record = predicates(work / "evidence")[path.name]
    assert record["results"]["verdict"] == "aborted"
    assert record["journal"]["stopped_in_state"] == "await_ready"
    assert record["journal"]["states_entered"] == ["preflight", "restore", "await_ready"]
    assert [e["state"] for e in record["timeline"]] == ["preflight", "restore"]
    assert [(r["kind"], r["deleted"]) for r in record["teardown"]["resources"] if r["kind"] == "scratch-dir"] == [
        ("scratch-dir", True)
    ]
    assert sorted(r["id"] for r in record["teardown"]["outstanding"]) == ["a", "b"]
    assert record["teardown"]["all_deleted"] is False and record["chain"]["seq"] == 1
    assert record["drill"]["recorded_by"] == "drill teardown"
    report = drill(work, "report", str(path), "--key", "drill.pub")
    assert report.returncode == 0 and f"# Restore drill {run_id}: ABORTED" in report.stdout
    assert "the run stopped in state await_ready" in report.stdout and "- thing `a`" in report.stdout

    again = drill(work, "teardown", run_id)
    assert "was aborted" not in again.stdout
    assert len(predicates(work / "evidence")) == 1  # one record per run, never a second
    assert drill(work, "verify", "--chain", "evidence", "--key", "drill.pub").returncode == 0


def test_the_next_run_of_the_runbook_records_the_killed_one_first(work: Path) -> None:
    run_id = killed_run(work)
    res = drill(work, "run", "rb.yaml", "--json")
    assert res.returncode == 1, res.stderr[-1000:]
    records = predicates(work / "evidence")
    aborted = records[f"{run_id}.evidence.json"]
    assert aborted["results"]["verdict"] == "aborted" and aborted["chain"]["seq"] == 1
    assert aborted["drill"]["recorded_by"] == "next drill run of the runbook"
    assert {r["kind"] for r in aborted["teardown"]["outstanding"]} == {"scratch-dir", "thing"}
    assert records[Path(json.loads(res.stdout)["evidence"]).name]["chain"]["seq"] == 2

    assert drill(work, "run", "rb.yaml").returncode == 1
    assert len(predicates(work / "evidence")) == 3  # the killed run is recorded once
    drill(work, "teardown", run_id)  # its scratch directory goes; no second record
    assert not list((work / "scratch").iterdir())
    assert len(predicates(work / "evidence")) == 3


def test_the_printed_head_digest_catches_truncation_with_an_older_head_put_back(work: Path) -> None:
    for _ in range(2):
        assert drill(work, "run", "rb.yaml").returncode == 1
    head = work / "evidence" / "trail.chain-head.json"
    older_head = head.read_bytes()
    assert drill(work, "run", "rb.yaml").returncode == 1
    audit = drill(work, "verify", "--chain", "evidence", "--key", "drill.pub")
    assert audit.returncode == 0
    pin = audit.stdout.split("--head-digest ", 1)[1].split()[0]
    assert pin == hashlib.sha256(head.read_bytes()).hexdigest()

    assert drill(work, "run", "rb.yaml").returncode == 1  # a later drill replaces the head: the pin still holds
    assert drill(work, "verify", "--chain", "evidence", "--key", "drill.pub", "--head-digest", pin).returncode == 0

    newest = sorted(predicates(work / "evidence").items(), key=lambda kv: kv[1]["chain"]["seq"])
    for name, _ in newest[2:]:  # seq 3 and 4 removed, and the head as it was after seq 2 put back
        (work / "evidence" / name).unlink()
    head.write_bytes(older_head)
    assert drill(work, "verify", "--chain", "evidence", "--key", "drill.pub").returncode == 0  # consistent again
    caught = drill(work, "verify", "--chain", "evidence", "--key", "drill.pub", "--head-digest", pin)
    assert caught.returncode == 1 and "PIN_NOT_FOUND" in caught.stdout
