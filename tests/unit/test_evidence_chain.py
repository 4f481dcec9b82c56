"""The evidence trail as an attacker with write access to the evidence directory (but not the key) tries it.

Every attack from issue 10 is played against a chain written by the real append path
(``drills.history.append_drill``: lock, scan, link, sign, head) and checked the way an
auditor checks it (``verify_directory``, what ``drill verify --chain`` prints).
"""

from __future__ import annotations

import base64
import hashlib
import json
import multiprocessing
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drills.clock import iso
from drills.evidence import envelope_bytes, generate_keypair, load_signer, load_verifiers, write_evidence
from drills.evidence.chain import HEAD_SUFFIX, verify_directory
from drills.evidence.statement import subject_for_bytes
from drills.history import PastDrill, append_drill, past_drills, regression

RUNBOOK = "orders"
SUBJECTS = [subject_for_bytes("runbook:orders", b"name: orders\n")]


def predicate(run_id: str, minute: int | None, rto_ms: int = 60_000, runbook: str = RUNBOOK) -> dict[str, Any]:
    """A record's facts; ``minute=None`` dates it now (a drill's record is dated when it is signed)."""
    at = f"2026-11-01T10:{minute:02d}:00.000Z" if minute is not None else iso(datetime.now(UTC))
    return {
        "drill": {"id": run_id, "started_at": at, "finished_at": at},
        "runbook": {"name": runbook},
        "results": {"verdict": "passed", "achieved_rto_ms": rto_ms, "rto_objective_ms": 600_000},
    }


def append(directory: Path, keys: Path, run_id: str, minute: int | None, rto_ms: int = 60_000) -> dict[str, Any]:
    """One drill's record through the real append path; returns the predicate that was signed."""
    signed: dict[str, Any] = {}

    def complete(past: list[PastDrill], trail: dict[str, Any]) -> dict[str, Any]:
        signed.update(predicate(run_id, minute, rto_ms) | trail | {"past": [p.run_id for p in past]})
        signed["regression"] = regression(past, rto_ms)  # as drills.api does
        return signed

    append_drill(
        directory,
        RUNBOOK,
        load_verifiers(keys / "drill.pub"),
        load_signer(keys / "drill.key"),
        complete,
        run_id=run_id,
        subjects=SUBJECTS,
    )
    return signed


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory / "drill.key")
    generate_keypair(directory / "attacker.key")
    return directory


@pytest.fixture(scope="module")
def pristine(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain of five records, seq 1..5, with the head saved after each append (heads/after-N)."""
    directory = tmp_path_factory.mktemp("chain") / "evidence"
    saved = directory.parent / "heads"
    saved.mkdir()
    for n in range(1, 6):
        append(directory, keys, f"run-{n}", n)
        shutil.copy(directory / f"{RUNBOOK}{HEAD_SUFFIX}", saved / f"after-{n}")
    return directory


@pytest.fixture
def chain(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "evidence"
    shutil.copytree(pristine, copy)
    return copy


def kinds(directory: Path, keys: Path, pins: tuple[str, ...] = ()) -> list[str]:
    report = verify_directory(directory, load_verifiers(keys / "drill.pub"), pins)
    found = [p.kind for _, _, problems, _ in report.runbooks.values() for p in problems]
    return found + [p.kind for p in report.pins_not_found]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(directory: Path, n: int) -> dict[str, Any]:
    envelope = json.loads((directory / f"run-{n}.evidence.json").read_text())
    result: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    return result


# --------------------------------------------------------------------------- the chain as written


def test_the_chain_as_written_holds(chain: Path, keys: Path) -> None:
    assert kinds(chain, keys) == []
    for n in range(2, 6):
        assert record(chain, n)["chain"]["seq"] == n
        assert record(chain, n)["chain"]["prev_envelope_sha256"] == sha(chain / f"run-{n - 1}.evidence.json")
        assert record(chain, n)["evidence_trail"]["deviations"] == []
    assert record(chain, 1)["chain"]["prev_envelope_sha256"] is None


def _append_in_a_process(args: tuple[str, str, int, Any]) -> None:
    directory, keys, n, barrier = args
    barrier.wait()  # all eight read the directory at the same moment: without the lock they all see seq 0
    append(Path(directory), Path(keys), f"conc-{n}", None)


def test_eight_concurrent_appends_make_one_linear_chain(keys: Path, tmp_path: Path) -> None:
    directory = tmp_path / "evidence"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Manager().Barrier(8)
    with ctx.Pool(8) as pool:
        pool.map(_append_in_a_process, [(str(directory), str(keys), n, barrier) for n in range(8)])
    records = [
        json.loads(base64.b64decode(json.loads(p.read_text())["payload"])) for p in directory.glob("*.evidence.json")
    ]
    by_seq = {r["predicate"]["chain"]["seq"]: r["predicate"] for r in records if "predicate" in r}
    assert sorted(by_seq) == list(range(1, 9))  # eight distinct seqs: no fork
    for seq in range(2, 9):
        prev = directory / f"{by_seq[seq - 1]['drill']['id']}.evidence.json"
        assert by_seq[seq]["chain"]["prev_envelope_sha256"] == sha(prev)
    assert kinds(directory, keys) == []


# --------------------------------------------------------------------------- only trusted records count


def plant(directory: Path, keys: Path, run_id: str, seq: int, rto_ms: int) -> None:
    """A record signed by another key, claiming the runbook and a high seq, with a tiny RTO."""
    fake = predicate(run_id, 30, rto_ms) | {"chain": {"id": f"runbook:{RUNBOOK}", "seq": seq}}
    write_evidence(fake, SUBJECTS, directory, run_id, load_signer(keys / "attacker.key"))


def test_planted_records_are_never_linked_nor_compared_and_are_reported(chain: Path, keys: Path) -> None:
    for seq in range(999, 1004):
        plant(chain, keys, f"planted-{seq}", seq, rto_ms=10)
    (chain / "garbage.evidence.json").write_text("{not json")
    signed = append(chain, keys, "run-6", 6, rto_ms=60_000)

    assert signed["chain"]["seq"] == 6  # not 1004
    assert signed["chain"]["prev_envelope_sha256"] == sha(chain / "run-5.evidence.json")
    assert signed["past"] == [f"run-{n}" for n in range(1, 6)]  # regression sees only the trusted drills
    assert signed["regression"]["flag"] is False  # five trusted drills as fast as this one; the planted 10 ms ignored
    deviations = signed["evidence_trail"]["deviations"]
    assert sorted(d["file"] for d in deviations if d["kind"] == "untrusted") == sorted(
        f"planted-{seq}.evidence.json" for seq in range(999, 1004)
    )
    assert [d["file"] for d in deviations if d["kind"] == "unparsable"] == ["garbage.evidence.json"]
    assert [p.run_id for p in past_drills(chain, RUNBOOK, load_verifiers(keys / "drill.pub"))][-1] == "run-6"
    assert sorted(kinds(chain, keys)) == ["unparsable", *["untrusted"] * 5]  # the auditor sees them too


def test_another_runbooks_records_and_plants_never_touch_this_chain(chain: Path, keys: Path) -> None:
    """One directory shared by a fleet: the append reads its own runbook's chain only, and still sees a
    plant that claims it, or a file that claims nothing."""
    other = predicate("billing-1", 40, runbook="billing") | {"chain": {"id": "runbook:billing", "seq": 1}}
    write_evidence(other, SUBJECTS, chain, "billing-1", load_signer(keys / "drill.key"))
    edited = chain / "billing-2.evidence.json"  # another runbook's record, edited: billing's problem, not ours
    write_evidence(other | {"drill": other["drill"] | {"id": "billing-2"}}, SUBJECTS, chain, "billing-2",
                   load_signer(keys / "drill.key"))  # fmt: skip
    envelope = json.loads(edited.read_text())
    envelope["signatures"][0]["sig"] = "A" + envelope["signatures"][0]["sig"][1:]
    edited.write_text(json.dumps(envelope))
    plant(chain, keys, "planted-7", 7, rto_ms=10)  # claims orders
    (chain / "garbage.evidence.json").write_text("{not json")  # claims nothing

    signed = append(chain, keys, "run-6", 6)

    assert signed["chain"]["seq"] == 6 and signed["past"] == [f"run-{n}" for n in range(1, 6)]
    deviations = {d["file"]: d["kind"] for d in signed["evidence_trail"]["deviations"]}
    assert deviations == {"planted-7.evidence.json": "untrusted", "garbage.evidence.json": "unparsable"}
    report = verify_directory(chain, load_verifiers(keys / "drill.pub"))  # the auditor still sees every runbook
    billing = [p.file for p in report.runbooks["billing"][2]]
    assert "billing-2.evidence.json" in billing


def test_a_planted_record_claiming_the_trusted_keyid_is_an_edit_not_a_link(chain: Path, keys: Path) -> None:
    plant(chain, keys, "planted-9", 9, rto_ms=10)
    path = chain / "planted-9.evidence.json"
    envelope = json.loads(path.read_text())
    envelope["signatures"][0]["keyid"] = load_signer(keys / "drill.key").keyid
    path.write_bytes(envelope_bytes(envelope))
    assert append(chain, keys, "run-6", 6)["chain"]["seq"] == 6
    assert kinds(chain, keys) == ["edit"]


# --------------------------------------------------------------------------- attacks an auditor must see


def test_a_deleted_record_is_a_gap(chain: Path, keys: Path) -> None:
    (chain / "run-3.evidence.json").unlink()
    assert kinds(chain, keys) == ["gap"]


def test_an_edited_record_is_an_edit(chain: Path, keys: Path) -> None:
    path = chain / "run-2.evidence.json"
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["results"]["verdict"] = "failed"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_bytes(envelope_bytes(envelope))
    found = kinds(chain, keys)
    assert "edit" in found and "gap" in found  # the edited record is out, so seq 2 is missing from the chain


def test_a_renamed_record_is_refused(chain: Path, keys: Path) -> None:
    (chain / "run-2.evidence.json").rename(chain / "run-7.evidence.json")
    assert sorted(kinds(chain, keys)) == ["gap", "renamed"]


def test_swapped_file_names_are_two_renamed_records(chain: Path, keys: Path) -> None:
    (chain / "run-2.evidence.json").rename(chain / "tmp")
    (chain / "run-3.evidence.json").rename(chain / "run-2.evidence.json")
    (chain / "tmp").rename(chain / "run-3.evidence.json")
    assert sorted(kinds(chain, keys)) == ["gap", "renamed", "renamed"]


def test_a_signature_without_keyid_is_refused(chain: Path, keys: Path) -> None:
    path = chain / "run-4.evidence.json"
    envelope = json.loads(path.read_text())
    del envelope["signatures"][0]["keyid"]
    path.write_bytes(envelope_bytes(envelope))
    assert sorted(kinds(chain, keys)) == ["gap", "no_keyid"]


def test_records_written_without_the_lock_are_a_fork(chain: Path, keys: Path) -> None:
    """What four concurrent drills did before: two records with one seq, linking to the same record."""
    link = {"chain": {"id": f"runbook:{RUNBOOK}", "seq": 6, "prev_envelope_sha256": sha(chain / "run-5.evidence.json")}}
    signer = load_signer(keys / "drill.key")
    for run_id in ("fork-a", "fork-b"):
        write_evidence(predicate(run_id, 40) | link, SUBJECTS, chain, run_id, signer)
    assert "fork" in kinds(chain, keys)


def test_a_record_linking_past_its_predecessor_is_a_reorder(chain: Path, keys: Path) -> None:
    signer = load_signer(keys / "drill.key")  # only a key holder can sign one: a buggy or hostile writer
    skip = {"chain": {"id": f"runbook:{RUNBOOK}", "seq": 6, "prev_envelope_sha256": sha(chain / "run-4.evidence.json")}}
    write_evidence(predicate("run-6", 50) | skip, SUBJECTS, chain, "run-6", signer)
    assert kinds(chain, keys) == ["reorder"]


def test_a_record_dated_before_its_predecessor_is_noted(chain: Path, keys: Path) -> None:
    back = {"chain": {"id": f"runbook:{RUNBOOK}", "seq": 6, "prev_envelope_sha256": sha(chain / "run-5.evidence.json")}}
    write_evidence(predicate("run-6", 0) | back, SUBJECTS, chain, "run-6", load_signer(keys / "drill.key"))
    report = verify_directory(chain, load_verifiers(keys / "drill.pub"))
    _records, _head, problems, notes = report.runbooks[RUNBOOK]
    assert problems == [] and any("dated before run-5.evidence.json" in n for n in notes)


def test_deleting_the_newest_records_is_truncation(chain: Path, keys: Path) -> None:
    (chain / "run-5.evidence.json").unlink()
    (chain / "run-4.evidence.json").unlink()
    assert kinds(chain, keys) == ["truncated"]


def test_deleting_the_newest_records_and_the_head_is_seen(chain: Path, keys: Path) -> None:
    (chain / "run-5.evidence.json").unlink()
    (chain / f"{RUNBOOK}{HEAD_SUFFIX}").unlink()
    assert kinds(chain, keys) == ["head_missing"]


def test_an_older_head_put_back_is_caught_by_the_pinned_digest(chain: Path, keys: Path, pristine: Path) -> None:
    head = chain / f"{RUNBOOK}{HEAD_SUFFIX}"
    pinned = sha(head)  # what the auditor noted after seq 5
    (chain / "run-5.evidence.json").unlink()
    shutil.copy(pristine.parent / "heads" / "after-4", head)  # the head as it was before seq 5
    assert kinds(chain, keys) == []  # a consistent older state: only the pin can tell
    assert kinds(chain, keys, (pinned,)) == ["pin_not_found"]


def test_a_pinned_head_stays_checkable_after_later_drills(chain: Path, keys: Path) -> None:
    pinned = sha(chain / f"{RUNBOOK}{HEAD_SUFFIX}")
    append(chain, keys, "run-6", 6)
    append(chain, keys, "run-7", 7)
    assert sha(chain / f"{RUNBOOK}{HEAD_SUFFIX}") != pinned
    assert kinds(chain, keys, (pinned, "sha256:" + sha(chain / "run-2.evidence.json"))) == []
    assert kinds(chain, keys, ("0" * 64,)) == ["pin_not_found"]


def test_an_edited_head_is_refused(chain: Path, keys: Path) -> None:
    head = chain / f"{RUNBOOK}{HEAD_SUFFIX}"
    head.write_bytes(head.read_bytes().replace(b'"sig": "', b'"sig": "A'))
    assert kinds(chain, keys) == ["head_invalid"]


def test_the_next_drill_after_a_truncation_keeps_the_gap_visible(chain: Path, keys: Path) -> None:
    gone = sha(chain / "run-5.evidence.json")
    (chain / "run-5.evidence.json").unlink()
    signed = append(chain, keys, "run-6", 6)
    assert signed["chain"]["seq"] == 6 and signed["chain"]["prev_envelope_sha256"] == gone
    assert [d["kind"] for d in signed["evidence_trail"]["deviations"]] == ["truncated"]
    assert "gap" in kinds(chain, keys)


def test_a_fifo_a_symlink_and_a_directory_posing_as_records_do_not_hang_the_append(chain: Path, keys: Path) -> None:
    os.mkfifo(chain / "fifo.evidence.json")  # reading it would block forever, with the lock held
    (chain / "link.evidence.json").symlink_to(chain / "run-1.evidence.json")
    (chain / "dir.evidence.json").mkdir()
    signed = append(chain, keys, "run-6", 6)
    assert signed["chain"]["seq"] == 6
    assert sorted(d["file"] for d in signed["evidence_trail"]["deviations"]) == [
        "dir.evidence.json",
        "fifo.evidence.json",
        "link.evidence.json",
    ]
