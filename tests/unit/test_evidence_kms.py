"""Evidence signed by an AWS KMS key (moto) verifies offline with nothing but the exported public key.

About moto (5.2.x, see /work/shared/notes/moto.md): its KMS ``Sign`` ignores
``MessageType=DIGEST`` and hashes the digest once more, so a DIGEST-mode
signature from moto is over ``sha256(sha256(PAE))`` and would (rightly) fail
verification, whereas real KMS signs the digest as is. The round-trip tests
therefore use ``message_type="RAW"`` (moto then signs exactly what real KMS
would). DIGEST mode, the production default, is tested separately by what it
*sends* (``sha256(data)`` with ``MessageType=DIGEST``), captured with a boto3
event handler, never by moto's signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from moto import mock_aws
from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend

from drills.aws.kms import RAW_MESSAGE_LIMIT, KmsSigner, export_public_key
from drills.errors import EvidenceError, VerificationError
from drills.evidence.dsse import pae
from drills.evidence.keys import generate_keypair, keyid_for, load_public_key, load_verifiers
from drills.evidence.statement import PAYLOAD_TYPE
from drills.evidence.store import read_and_verify, write_evidence

REGION = "eu-west-1"

PREDICATE: dict[str, Any] = {
    "schema_version": 1,
    "drill": {"id": "run-kms-1", "started_at": "2026-01-02T03:04:05Z", "finished_at": "2026-01-02T03:14:05Z"},
    "runbook": {"name": "orders-nightly"},
    "objectives": {"rto_ms": 1_800_000, "rpo_ms": 300_000},
    "results": {"achieved_rto_ms": 600_000, "achieved_rpo_ms": 4_000, "verdict": "passed"},
}
SUBJECTS = [{"name": "runbooks/orders.yaml", "digest": {"sha256": "ab" * 32}}]


@pytest.fixture
def session() -> Iterator[Any]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture
def key_arn(session: Any) -> str:
    meta = session.client("kms").create_key(
        KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Description="restore-drills evidence"
    )["KeyMetadata"]
    return str(meta["Arn"])


def _kms_error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def test_kms_signed_evidence_verifies_offline_with_the_exported_pem(session: Any, key_arn: str, tmp_path: Path) -> None:
    signer = KmsSigner(key_arn, session, message_type="RAW")  # RAW: see the module docstring (moto's DIGEST fault)
    out = write_evidence(PREDICATE, SUBJECTS, tmp_path / "evidence", "run-kms-1", signer)
    pem_path = export_public_key(signer, tmp_path / "auditor" / "drill-kms.pub")
    assert pem_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert pem_path.stat().st_mode & 0o777 == 0o644

    envelope = json.loads(out.read_bytes())
    assert envelope["signatures"][0]["keyid"] == signer.keyid
    assert not envelope["signatures"][0]["keyid"].startswith(("arn:", "alias/"))

    # Offline: AWS is gone, only the PEM file is left.
    with mock.patch.object(KmsBackend, "sign", side_effect=AssertionError("verification must not call KMS")):
        statement = read_and_verify(out, load_verifiers(pem_path))
    assert statement["predicate"] == PREDICATE
    assert statement["subject"] == SUBJECTS


def test_a_flipped_byte_in_kms_evidence_fails(session: Any, key_arn: str, tmp_path: Path) -> None:
    signer = KmsSigner(key_arn, session, message_type="RAW")
    out = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-kms-1", signer)
    pem_path = export_public_key(signer, tmp_path / "kms.pub")
    verifiers = load_verifiers(pem_path)
    original = out.read_bytes()

    envelope = json.loads(original)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[len(sig) // 2] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    body = bytearray(base64.b64decode(envelope["payload"]))
    # Flip one byte inside the signed payload (a digit of achieved_rto_ms) and, separately, in the signature.
    at = body.index(b"600000")
    for mutate in ("payload", "sig"):
        env = json.loads(original)
        if mutate == "payload":
            changed = bytearray(body)
            changed[at] = ord("7")
            env["payload"] = base64.b64encode(bytes(changed)).decode()
        else:
            env["signatures"][0]["sig"] = envelope["signatures"][0]["sig"]
        bad = tmp_path / f"bad-{mutate}.evidence.json"
        bad.write_bytes(json.dumps(env, indent=2, sort_keys=True).encode() + b"\n")
        with pytest.raises(VerificationError):
            read_and_verify(bad, verifiers)

    # And a raw flipped byte anywhere in the file as written.
    for index in (len(original) // 3, len(original) // 2, len(original) - 5):
        flipped = bytearray(original)
        flipped[index] ^= 0x01
        bad = tmp_path / "flipped.evidence.json"
        bad.write_bytes(bytes(flipped))
        with pytest.raises(EvidenceError):
            read_and_verify(bad, verifiers)
    assert read_and_verify(out, verifiers)["predicate"] == PREDICATE


def test_keyid_is_the_local_keyid_scheme_of_the_same_public_key(session: Any, key_arn: str, tmp_path: Path) -> None:
    signer = KmsSigner(key_arn, session, message_type="RAW")
    der = session.client("kms").get_public_key(KeyId=key_arn)["PublicKey"]
    assert signer.keyid == "sha256:" + hashlib.sha256(der).hexdigest()
    assert signer.keyid == keyid_for(serialization.load_der_public_key(der))  # type: ignore[arg-type]
    pem = export_public_key(signer, tmp_path / "kms.pub")
    assert load_public_key(pem).keyid == signer.keyid
    # Same key through its alias: the keyid names the key material, never the alias.
    session.client("kms").create_alias(AliasName="alias/drill-evidence", TargetKeyId=key_arn)
    assert KmsSigner("alias/drill-evidence", session, message_type="RAW").keyid == signer.keyid


def test_a_symmetric_key_is_refused_at_construction_with_the_create_key_hint(session: Any) -> None:
    sym = session.client("kms").create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    with pytest.raises(EvidenceError) as info:
        KmsSigner(sym["Arn"], session)
    text = str(info.value)
    assert sym["Arn"] in text
    assert "aws kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY" in text


def test_real_kms_refusing_get_public_key_on_a_symmetric_key_gets_the_same_hint(session: Any) -> None:
    # Real KMS answers GetPublicKey on a symmetric key with UnsupportedOperationException (moto returns a key).
    sym = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    error = _kms_error("UnsupportedOperationException", "GetPublicKey is not supported for symmetric keys")
    with mock.patch.object(KmsBackend, "get_public_key", side_effect=error), pytest.raises(EvidenceError) as info:
        KmsSigner(sym, session)
    assert sym in str(info.value)
    assert "--key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY" in str(info.value)


def test_an_rsa_signing_key_is_refused(session: Any) -> None:
    rsa = session.client("kms").create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    with pytest.raises(EvidenceError, match="ECDSA_SHA_256") as info:
        KmsSigner(rsa, session)
    assert "create-key --key-spec ECC_NIST_P256" in str(info.value)


def test_an_unknown_key_id_is_named_in_the_error(session: Any) -> None:
    missing = f"arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    with pytest.raises(EvidenceError) as info:
        KmsSigner(missing, session)
    assert missing in str(info.value)
    assert "does not exist" in str(info.value)
    with pytest.raises(EvidenceError, match="alias/no-such-alias"):
        KmsSigner("alias/no-such-alias", session)


def test_access_denied_names_the_key_and_the_missing_permission(session: Any, key_arn: str) -> None:
    denied = _kms_error("AccessDeniedException", "User is not authorized to perform kms:GetPublicKey")
    with mock.patch.object(KmsBackend, "get_public_key", side_effect=denied), pytest.raises(EvidenceError) as info:
        KmsSigner(key_arn, session)
    assert key_arn in str(info.value)
    assert "kms:GetPublicKey" in str(info.value)

    signer = KmsSigner(key_arn, session, message_type="RAW")
    denied = _kms_error("AccessDeniedException", "User is not authorized to perform kms:Sign")
    with mock.patch.object(KmsBackend, "sign", side_effect=denied), pytest.raises(EvidenceError) as info:
        signer.sign(b"payload")
    assert key_arn in str(info.value)
    assert "lacks kms:Sign" in str(info.value)


@pytest.mark.parametrize("code", ["DisabledException", "KMSInvalidStateException"])
def test_a_disabled_or_pending_deletion_key_is_reported(session: Any, key_arn: str, code: str, tmp_path: Path) -> None:
    # moto keeps signing with a disabled key, so the state error real KMS gives is injected.
    signer = KmsSigner(key_arn, session, message_type="RAW")
    with (
        mock.patch.object(KmsBackend, "sign", side_effect=_kms_error(code, "key is not usable")),
        pytest.raises(EvidenceError) as info,
    ):
        write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-x", signer)
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert key_arn in str(info.value)
    assert code in str(info.value)
    assert "enable-key" in str(info.value)


def test_digest_mode_sends_sha256_of_the_pae_as_a_digest(session: Any, key_arn: str, tmp_path: Path) -> None:
    """What production sends; moto's signature is not used (it re-hashes DIGEST messages)."""
    sent: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    session.events.register("before-parameter-build.kms.Sign", capture)
    signer = KmsSigner(key_arn, session)  # message_type defaults to DIGEST
    assert signer.message_type == "DIGEST"

    big = b"x" * (RAW_MESSAGE_LIMIT * 3)  # DIGEST mode has no size limit
    signer.sign(big)
    out = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-kms-1", signer)

    envelope = json.loads(out.read_bytes())
    signed = pae(PAYLOAD_TYPE, base64.b64decode(envelope["payload"]))
    assert [p["MessageType"] for p in sent] == ["DIGEST", "DIGEST"]
    assert [p["SigningAlgorithm"] for p in sent] == ["ECDSA_SHA_256", "ECDSA_SHA_256"]
    assert [p["KeyId"] for p in sent] == [key_arn, key_arn]
    assert sent[0]["Message"] == hashlib.sha256(big).digest()
    assert sent[1]["Message"] == hashlib.sha256(signed).digest()
    assert len(sent[1]["Message"]) == 32


def test_raw_mode_refuses_more_than_4096_bytes(session: Any, key_arn: str) -> None:
    signer = KmsSigner(key_arn, session, message_type="RAW")
    assert signer.sign(b"y" * RAW_MESSAGE_LIMIT)
    with pytest.raises(EvidenceError, match="4096") as info:
        signer.sign(b"y" * (RAW_MESSAGE_LIMIT + 1))
    assert "DIGEST" in str(info.value)


def test_bad_message_type_and_empty_key_id_are_refused(session: Any, key_arn: str) -> None:
    with pytest.raises(EvidenceError, match="DIGEST or RAW"):
        KmsSigner(key_arn, session, message_type="digest")
    with pytest.raises(EvidenceError, match="key id"):
        KmsSigner("", session)


def test_a_kms_key_and_a_retired_local_key_share_one_keyring(session: Any, key_arn: str, tmp_path: Path) -> None:
    """Rotation from a local key to KMS: one keyring verifies evidence from both."""
    from drills.evidence.keys import keyring_entry, load_signer

    generate_keypair(tmp_path / "old.key")
    old = write_evidence(PREDICATE, SUBJECTS, tmp_path / "old", "run-kms-1", load_signer(tmp_path / "old.key"))
    signer = KmsSigner(key_arn, session, message_type="RAW")
    new = write_evidence(PREDICATE, SUBJECTS, tmp_path / "new", "run-kms-1", signer)
    pem = export_public_key(signer, tmp_path / "kms.pub")
    keyring = tmp_path / "keyring.json"
    keyring.write_text(json.dumps({"keys": [keyring_entry(tmp_path / "old.pub"), keyring_entry(pem)]}))
    verifiers = load_verifiers(keyring)
    assert read_and_verify(old, verifiers)["predicate"] == PREDICATE
    assert read_and_verify(new, verifiers)["predicate"] == PREDICATE
    with pytest.raises(VerificationError):
        read_and_verify(new, load_verifiers(tmp_path / "old.pub"))


def test_kms_module_does_not_import_boto3_at_import_time() -> None:
    import subprocess
    import sys

    code = "import sys, drills.aws.kms; print('boto3' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_what_real_kms_does_with_a_digest_verifies_over_the_full_pae() -> None:
    """The DIGEST contract without moto: ECDSA over a pre-hashed sha256(PAE) is what Verifier checks over the PAE."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    from drills.evidence.keys import Verifier

    private = ec.generate_private_key(ec.SECP256R1())  # stands in for the key inside KMS
    data = pae(PAYLOAD_TYPE, b"{}" * RAW_MESSAGE_LIMIT)  # larger than RAW allows
    sig = private.sign(hashlib.sha256(data).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    verifier = Verifier(keyid_for(private.public_key()), private.public_key())
    assert verifier.verify(sig, data)
    assert not verifier.verify(sig, data + b" ")
