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
from pathlib import Path
from typing import Any

import pytest

from drills.errors import PreflightError
from drills.evidence import generate_keypair, keyring_entry, load_signer, subject_for_bytes, write_evidence
from drills.localpg import find_pg_binaries

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
