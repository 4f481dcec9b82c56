"""Evidence files as a user and an auditor see them: written once, verified byte for byte."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drills.errors import EvidenceError, VerificationError
from drills.evidence import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    canonical_json,
    envelope_bytes,
    generate_keypair,
    keyring_entry,
    load_public_key,
    load_signer,
    load_verifiers,
    read_and_verify,
    sign_envelope,
    subject_for_bytes,
    summary,
    verify_evidence_bytes,
    write_evidence,
)
from drills.evidence.keys import Signer

PREDICATE: dict[str, Any] = {
    "schema_version": 1,
    "drill": {"id": "run-42", "started_at": "2025-06-01T10:00:00.000Z", "finished_at": "2025-06-01T10:20:00.000Z"},
    "runbook": {"name": "orders-nightly", "sha256": "ab" * 32},
    "objectives": {"rto_ms": 1_800_000, "rpo_ms": 300_000},
    "results": {"verdict": "passed", "achieved_rto_ms": 723_456, "achieved_rpo_ms": 4_000},
    "validation": {"findings": [{"check": "schema", "passed": True}, {"check": "rows", "passed": False}]},
}
SUBJECTS = [subject_for_bytes("runbooks/orders.yaml", b"name: orders-nightly\n")]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory / "old.key")
    generate_keypair(directory / "new.key")
    return directory


@pytest.fixture(scope="module")
def signed(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of one evidence file signed with the old key."""
    out = tmp_path_factory.mktemp("evidence")
    return write_evidence(PREDICATE, SUBJECTS, out, "run-42", load_signer(keys / "old.key")).read_bytes()


def test_round_trip_returns_the_statement(keys: Path, tmp_path: Path) -> None:
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path / "out" / "nested", "run-42", load_signer(keys / "new.key"))

    assert path == tmp_path / "out" / "nested" / "run-42.evidence.json"
    statement = read_and_verify(path, [load_public_key(keys / "new.pub")])
    assert statement == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": SUBJECTS,
        "predicateType": PREDICATE_TYPE,
        "predicate": PREDICATE,
    }
    envelope = json.loads(path.read_text())
    assert envelope["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == canonical_json(statement)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["run-42.evidence.json"]  # no temp file left behind


def test_wrong_key_fails(keys: Path, tmp_path: Path) -> None:
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path, "r1", load_signer(keys / "old.key"))
    with pytest.raises(VerificationError, match="does not verify with any given key"):
        read_and_verify(path, [load_public_key(keys / "new.pub")])


def test_existing_evidence_is_not_replaced(keys: Path, tmp_path: Path) -> None:
    signer = load_signer(keys / "old.key")
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-42", signer)
    before = path.read_bytes()
    with pytest.raises(EvidenceError, match="refusing to replace signed evidence"):
        write_evidence({**PREDICATE, "x": 1}, SUBJECTS, tmp_path, "run-42", signer)
    assert path.read_bytes() == before
    write_evidence({**PREDICATE, "x": 1}, SUBJECTS, tmp_path, "run-42", signer, overwrite=True)
    assert read_and_verify(path, [load_public_key(keys / "old.pub")])["predicate"]["x"] == 1


@pytest.mark.parametrize("run_id", ["../escape", "a/b", "", ".hidden", "a..b"])
def test_run_ids_that_could_escape_the_directory_are_refused(keys: Path, tmp_path: Path, run_id: str) -> None:
    with pytest.raises(EvidenceError, match="cannot name an evidence file"):
        write_evidence(PREDICATE, SUBJECTS, tmp_path, run_id, load_signer(keys / "old.key"))


def test_floats_and_secrets_are_refused_before_anything_is_written(keys: Path, tmp_path: Path) -> None:
    signer = load_signer(keys / "old.key")
    with pytest.raises(EvidenceError, match=r"\$\.predicate\.results\.achieved_rto_ms is a float"):
        write_evidence({"results": {"achieved_rto_ms": 1.5}}, SUBJECTS, tmp_path, "r1", signer)
    with pytest.raises(EvidenceError, match="secret #1"):  # bare: nothing says it is a password, so refused
        write_evidence({"note": "it was hunter2"}, SUBJECTS, tmp_path, "r1", signer, secrets=["hunter2"])
    assert list(tmp_path.iterdir()) == []


def test_a_password_in_a_connection_string_is_masked_before_signing(keys: Path, tmp_path: Path) -> None:
    signer = load_signer(keys / "old.key")
    error = "cannot connect to postgresql://u:hun@ter2@h/db: refused"
    path = write_evidence({"error": error}, SUBJECTS, tmp_path, "r1", signer, secrets=["hun@ter2"])
    payload = base64.b64decode(json.loads(path.read_text())["payload"]).decode()
    assert "ter2" not in payload
    assert "postgresql://u:***@h/db: refused" in payload


def test_subjects_are_checked(keys: Path, tmp_path: Path) -> None:
    signer = load_signer(keys / "old.key")
    with pytest.raises(EvidenceError, match="non-empty list"):
        write_evidence(PREDICATE, [], tmp_path, "r1", signer)
    with pytest.raises(EvidenceError, match="64 lowercase hex"):
        write_evidence(PREDICATE, [{"name": "x", "digest": {"sha256": "ABC"}}], tmp_path, "r1", signer)


# --------------------------------------------------------------------------- tampering


def _tampered_file(directory: Path, data: bytes) -> Path:
    path = directory / "run-42.evidence.json"  # the name of the run it records
    path.write_bytes(data)
    return path


def test_every_single_byte_change_is_detected_exhaustively(
    signed: bytes, keys: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("exhaustive")
    verifiers = load_verifiers(keys / "old.pub")
    read_and_verify(_tampered_file(directory, signed), verifiers)  # the untouched file verifies
    for index in range(len(signed)):
        for flip in (0x01, 0x20):
            data = signed[:index] + bytes([signed[index] ^ flip]) + signed[index + 1 :]
            with pytest.raises(VerificationError):
                read_and_verify(_tampered_file(directory, data), verifiers)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_flipping_any_byte_of_the_file_fails(
    signed: bytes, keys: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(signed) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != signed[index]), label="byte")
    tampered = signed[:index] + bytes([new]) + signed[index + 1 :]
    path = _tampered_file(tmp_path_factory.mktemp("flip", numbered=True), tampered)
    with pytest.raises(VerificationError):  # a subclass of EvidenceError, so "not JSON" is covered too
        read_and_verify(path, load_verifiers(keys / "old.pub"))


@settings(max_examples=200)
@given(st.data())
def test_changing_any_byte_of_the_decoded_payload_fails(signed: bytes, keys: Path, data: st.DataObject) -> None:
    envelope = json.loads(signed)
    payload = base64.b64decode(envelope["payload"])
    index = data.draw(st.integers(0, len(payload) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != payload[index]), label="byte")
    envelope["payload"] = base64.b64encode(payload[:index] + bytes([new]) + payload[index + 1 :]).decode()
    with pytest.raises(VerificationError, match="does not verify"):
        verify_evidence_bytes(envelope_bytes(envelope), load_verifiers(keys / "old.pub"))


def test_reformatted_file_is_reported_as_reformatted(signed: bytes, keys: Path, tmp_path: Path) -> None:
    path = _tampered_file(tmp_path, json.dumps(json.loads(signed)).encode())
    with pytest.raises(VerificationError, match="signature is valid but the file is not byte-for-byte"):
        read_and_verify(path, [load_public_key(keys / "old.pub")])


def _signed_statement(signer: Signer, statement: object, payload: bytes | None = None) -> bytes:
    body = payload if payload is not None else canonical_json(statement)
    return envelope_bytes(sign_envelope(body, PAYLOAD_TYPE, signer))


@pytest.mark.parametrize(
    ("statement", "payload", "message"),
    [
        (None, b'{"b":1, "a":2}', "not RFC 8785 canonical"),
        (None, b"not json", "not UTF-8 JSON"),
        (None, b'{"a":1.5}', "float"),
        ([1], None, "must be a JSON object"),
        ({"_type": "https://in-toto.io/Statement/v0.1"}, None, "_type is"),
        (
            {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1"},
            None,
            "predicateType is 'https://slsa.dev/provenance/v1'",
        ),
        (
            {"_type": "https://in-toto.io/Statement/v1", "predicateType": PREDICATE_TYPE, "predicate": {}},
            None,
            "subject must be a non-empty list",
        ),
        (
            {"_type": "https://in-toto.io/Statement/v1", "predicateType": PREDICATE_TYPE, "subject": SUBJECTS},
            None,
            "predicate is missing",
        ),
    ],
)
def test_signed_but_wrong_payloads_say_what_is_wrong(
    keys: Path, tmp_path: Path, statement: object, payload: bytes | None, message: str
) -> None:
    path = _tampered_file(tmp_path, _signed_statement(load_signer(keys / "old.key"), statement, payload))
    with pytest.raises(VerificationError, match=message):
        read_and_verify(path, [load_public_key(keys / "old.pub")])


def test_other_payload_type_is_refused(keys: Path, tmp_path: Path) -> None:
    signer = load_signer(keys / "old.key")
    envelope = sign_envelope(canonical_json({"x": 1}), "application/json", signer)
    path = _tampered_file(tmp_path, envelope_bytes(envelope))
    with pytest.raises(VerificationError, match="payloadType is 'application/json'"):
        read_and_verify(path, [load_public_key(keys / "old.pub")])


def test_missing_evidence_file(tmp_path: Path, keys: Path) -> None:
    with pytest.raises(EvidenceError, match="does not exist"):
        read_and_verify(tmp_path / "nope.evidence.json", [load_public_key(keys / "old.pub")])


# --------------------------------------------------------------------------- rotation


def _keyring(keys: Path, path: Path) -> Path:
    rotation = datetime(2026, 1, 1, tzinfo=UTC)
    ring = {
        "keys": [
            keyring_entry(keys / "old.pub", not_after=rotation),
            keyring_entry(keys / "new.pub", not_before=rotation),
        ]
    }
    path.write_text(json.dumps(ring, indent=2))
    return path


def test_keyring_verifies_evidence_signed_by_the_rotated_out_key(signed: bytes, keys: Path, tmp_path: Path) -> None:
    ring = load_verifiers(_keyring(keys, tmp_path / "keyring.json"))
    statement = read_and_verify(_tampered_file(tmp_path, signed), ring)
    assert statement["predicate"]["drill"]["id"] == "run-42"

    later = write_evidence(
        {**PREDICATE, "drill": {"id": "run-43", "finished_at": "2026-02-01T00:00:00Z"}},
        SUBJECTS,
        tmp_path,
        "run-43",
        load_signer(keys / "new.key"),
    )
    assert read_and_verify(later, ring)["predicate"]["drill"]["id"] == "run-43"


def test_retired_key_cannot_sign_evidence_dated_after_its_window(keys: Path, tmp_path: Path) -> None:
    ring = load_verifiers(_keyring(keys, tmp_path / "keyring.json"))
    late = write_evidence(
        {"drill": {"id": "run-99", "finished_at": "2026-03-01T00:00:00Z"}},
        SUBJECTS,
        tmp_path,
        "run-99",
        load_signer(keys / "old.key"),
    )
    with pytest.raises(VerificationError, match="which the keyring allows only"):
        read_and_verify(late, ring)
    assert read_and_verify(late, [load_public_key(keys / "old.pub")])  # the bare key has no window


def test_window_needs_a_date_in_the_evidence(keys: Path, tmp_path: Path) -> None:
    ring = load_verifiers(_keyring(keys, tmp_path / "keyring.json"))
    undated = write_evidence({"drill": {"id": "x"}}, SUBJECTS, tmp_path, "x", load_signer(keys / "old.key"))
    with pytest.raises(VerificationError, match=r"records no predicate\.drill\.finished_at"):
        read_and_verify(undated, ring)
    assert read_and_verify(undated, ring, at=datetime(2025, 1, 1, tzinfo=UTC))


def test_keyring_without_the_signing_key_fails(signed: bytes, keys: Path, tmp_path: Path) -> None:
    ring = tmp_path / "ring.json"
    ring.write_text(json.dumps([keyring_entry(keys / "new.pub")]))
    with pytest.raises(VerificationError, match="does not verify"):
        read_and_verify(_tampered_file(tmp_path, signed), load_verifiers(ring))


# --------------------------------------------------------------------------- summary


def test_summary_reports_what_a_user_checks(signed: bytes) -> None:
    statement = json.loads(base64.b64decode(json.loads(signed)["payload"]))
    text = summary(statement)
    assert text.splitlines() == [
        "run      run-42",
        "runbook  orders-nightly",
        "verdict  passed",
        "RTO      12m 3.456s achieved, objective 30m (met)",
        "RPO      4s achieved, objective 5m (met)",
        "findings 1 failed of 2",
    ]


def test_summary_uses_results_objectives_and_explicit_met_flags() -> None:
    statement = {
        "predicate": {
            "results": {
                "achieved_rto_ms": 7_200_000,
                "rto_objective_ms": 3_600_000,
                "achieved_rpo_ms": 10,
                "rpo_met": False,
                "verdict": "failed",
            }
        }
    }
    text = summary(statement)
    assert "RTO      2h achieved, objective 1h (MISSED)" in text
    assert "RPO      0.01s achieved, objective unknown (MISSED)" in text


@pytest.mark.parametrize("statement", [{}, {"predicate": None}, {"predicate": {"results": "x", "validation": []}}])
def test_summary_tolerates_missing_fields(statement: dict[str, Any]) -> None:
    text = summary(statement)
    assert "run      unknown" in text
    assert "findings unknown" in text
    assert "RTO      unknown achieved, objective unknown" in text
