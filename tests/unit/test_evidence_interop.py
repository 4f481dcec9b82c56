"""Our envelopes as another DSSE implementation sees them: securesystemslib's verifier, both ways.

An auditor should not have to trust this tool's own verifier. securesystemslib (the DSSE
implementation of the Secure Systems Lab, who wrote the spec) must accept what we write and
refuse what was altered; and we must accept the base64 spellings the spec allows.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError as SslibVerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from drills.errors import VerificationError
from drills.evidence import (
    PAYLOAD_TYPE,
    Verifier,
    canonical_json,
    envelope_bytes,
    generate_keypair,
    keyid_for,
    load_public_key,
    load_signer,
    open_envelope,
    read_and_verify,
    subject_for_bytes,
    verify_evidence_bytes,
    write_evidence,
)

PREDICATE: dict[str, Any] = {
    "drill": {"id": "run-7", "finished_at": "2026-11-01T10:00:00.000Z"},
    "runbook": {"name": "orders"},
    "results": {"verdict": "passed", "achieved_rto_ms": 61_000},
}
SUBJECTS = [subject_for_bytes("runbook:orders", b"name: orders\n")]


class EcdsaSigner:
    """What an AWS KMS ECC_NIST_P256 key returns: a DER ECDSA signature over SHA-256 of the PAE."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.keyid = keyid_for(self.private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))


@pytest.fixture
def ed25519_evidence(tmp_path: Path) -> tuple[Path, SSlibKey]:
    generate_keypair(tmp_path / "drill.key")
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path / "evidence", "run-7", load_signer(tmp_path / "drill.key"))
    verifier = load_public_key(tmp_path / "drill.pub")
    return path, SSlibKey.from_crypto(verifier.public_key, keyid=verifier.keyid)


def test_securesystemslib_verifies_our_ed25519_envelope(ed25519_evidence: tuple[Path, SSlibKey]) -> None:
    path, key = ed25519_evidence
    envelope = Envelope.from_dict(json.loads(path.read_text()))
    accepted = envelope.verify([key], 1)
    assert list(accepted) == [key.keyid]
    statement = json.loads(envelope.payload)
    assert envelope.payload_type == PAYLOAD_TYPE and statement["predicate"] == PREDICATE


def test_securesystemslib_refuses_our_envelope_once_altered(ed25519_evidence: tuple[Path, SSlibKey]) -> None:
    path, key = ed25519_evidence
    doc = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["results"]["verdict"] = "failed"
    doc["payload"] = base64.b64encode(canonical_json(statement)).decode()
    with pytest.raises(SslibVerificationError):
        Envelope.from_dict(doc).verify([key], 1)


def test_securesystemslib_verifies_a_kms_style_ecdsa_envelope(tmp_path: Path) -> None:
    signer = EcdsaSigner()
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-7", signer)
    key = SSlibKey.from_crypto(signer.private_key.public_key(), keyid=signer.keyid)
    assert key.scheme == "ecdsa-sha2-nistp256"
    assert list(Envelope.from_dict(json.loads(path.read_text())).verify([key], 1)) == [signer.keyid]


def test_we_verify_an_envelope_signed_by_securesystemslib() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    keyid = keyid_for(private.public_key())
    sslib_key = SSlibKey.from_crypto(private.public_key(), keyid=keyid)
    envelope = Envelope(canonical_json({"a": 1}), PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private, sslib_key))
    opened = open_envelope(envelope.to_dict(), [Verifier(keyid, private.public_key())], strict=True)
    assert opened.payload == b'{"a":1}'


def _urlsafe(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc, payload=base64.urlsafe_b64encode(base64.b64decode(doc["payload"])).decode())
    out["signatures"] = [
        dict(s, sig=base64.urlsafe_b64encode(base64.b64decode(s["sig"])).decode()) for s in doc["signatures"]
    ]
    return out


def test_url_safe_base64_is_accepted_as_dsse_allows_and_named_as_a_re_encoding_of_a_file(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "drill.key")
    verifier = load_public_key(tmp_path / "drill.pub")
    # a payload whose base64 holds '+' or '/', so the URL-safe spelling differs from the standard one
    predicate = PREDICATE | {"note": "~~~>>>???"}
    path = write_evidence(predicate, SUBJECTS, tmp_path, "run-7", load_signer(tmp_path / "drill.key"))
    doc = json.loads(path.read_text())
    urlsafe = _urlsafe(doc)
    assert urlsafe["payload"] != doc["payload"]
    assert json.loads(open_envelope(urlsafe, [verifier], strict=True).payload)["predicate"] == predicate
    with pytest.raises(VerificationError, match="mixes the standard and the URL-safe"):
        open_envelope(dict(urlsafe, payload="ab-+"), [verifier])
    with pytest.raises(VerificationError, match="not byte-for-byte as written"):
        verify_evidence_bytes(envelope_bytes(urlsafe), [verifier], name=path.name)
    assert read_and_verify(path, [verifier])["predicate"] == predicate


def test_unpadded_base64_is_refused(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "drill.key")
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-7", load_signer(tmp_path / "drill.key"))
    doc = json.loads(path.read_text())
    doc["signatures"][0]["sig"] = doc["signatures"][0]["sig"].rstrip("=")
    with pytest.raises(VerificationError, match="base64"):
        open_envelope(doc, [load_public_key(tmp_path / "drill.pub")])


def test_the_documented_securesystemslib_script_verifies_and_refuses(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "evidence.md").read_text()
    script = tmp_path / "verify_sslib.py"
    script.write_text(next(b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "securesystemslib" in b))
    generate_keypair(tmp_path / "drill.key")
    generate_keypair(tmp_path / "other.key")
    path = write_evidence(PREDICATE, SUBJECTS, tmp_path, "run-7", load_signer(tmp_path / "drill.key"))

    def run(evidence: Path, key: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(script), str(evidence), str(tmp_path / key)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    good = run(path, "drill.pub")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == PREDICATE
    assert "NOT VERIFIED" in run(path, "other.pub").stderr
    renamed = tmp_path / "run-8.evidence.json"
    renamed.write_bytes(path.read_bytes())
    assert "NOT VERIFIED" in run(renamed, "drill.pub").stderr
    doc_ = json.loads(path.read_text())
    doc_["payload"] = base64.b64encode(base64.b64decode(doc_["payload"]).replace(b"passed", b"failed")).decode()
    path.write_text(json.dumps(doc_))
    assert "NOT VERIFIED" in run(path, "drill.pub").stderr
