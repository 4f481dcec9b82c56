"""Key files: what `drill keygen` writes and what loading them tells a user when something is off."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from drills.errors import EvidenceError, InputError
from drills.evidence import (
    generate_keypair,
    keyid_for,
    keyring_entry,
    load_public_key,
    load_signer,
    load_verifiers,
    parse_keyring,
)


def test_generate_writes_private_0600_and_public_next_to_it(tmp_path: Path) -> None:
    keyid = generate_keypair(tmp_path / "drill.key")

    private, public = tmp_path / "drill.key", tmp_path / "drill.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_signer(private).keyid == keyid == load_public_key(public).keyid


def test_private_key_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        generate_keypair(tmp_path / "k", tmp_path / "elsewhere" / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "elsewhere" / "k.pem").exists()


def test_keyid_is_sha256_of_der_spki(tmp_path: Path) -> None:
    keyid = generate_keypair(tmp_path / "k.key")
    der = serialization.load_pem_public_key((tmp_path / "k.pub").read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keyid == "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_keyid_matches_the_documented_openssl_recipe(tmp_path: Path) -> None:
    keyid = generate_keypair(tmp_path / "k.key")
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "k.pub"), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert keyid == "sha256:" + hashlib.sha256(der).hexdigest()


def test_refuses_to_overwrite_a_key_unless_forced(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path / "k.key")
    before = (tmp_path / "k.key").read_bytes()

    with pytest.raises(InputError, match="already exists"):
        generate_keypair(tmp_path / "k.key")
    assert (tmp_path / "k.key").read_bytes() == before

    second = generate_keypair(tmp_path / "k.key", force=True)
    assert second != first
    assert load_signer(tmp_path / "k.key").keyid == second
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_refuses_when_only_the_public_file_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text("old")
    with pytest.raises(InputError, match=r"k\.pub already exists"):
        generate_keypair(tmp_path / "k.key")
    assert not (tmp_path / "k.key").exists()


def test_private_path_ending_in_pub_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="both be written"):
        generate_keypair(tmp_path / "k.pub")


def test_signatures_verify_with_the_matching_public_key(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    signer, verifier = load_signer(tmp_path / "k.key"), load_public_key(tmp_path / "k.pub")
    sig = signer.sign(b"data")
    assert verifier.verify(sig, b"data")
    assert not verifier.verify(sig, b"datA")
    assert not verifier.verify(b"short", b"data")


def test_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(EvidenceError) as info:
        load_signer(missing)
    assert str(missing) in str(info.value)
    assert f"drill keygen --out {missing}" in str(info.value)


def test_not_a_pem_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(EvidenceError, match=r"junk\.key is not a PEM file"):
        load_signer(junk)
    with pytest.raises(EvidenceError, match="not a PEM file"):
        load_public_key(junk)


def test_public_key_passed_as_signer_and_private_key_passed_as_verifier(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    with pytest.raises(EvidenceError, match="holds a public key"):
        load_signer(tmp_path / "k.pub")
    with pytest.raises(EvidenceError, match="holds a private key"):
        load_public_key(tmp_path / "k.key")


def test_wrong_key_type_is_named(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.key"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(EvidenceError, match=r"RSAPrivateKey key; local signing uses Ed25519"):
        load_signer(path)
    pub = tmp_path / "rsa.pub"
    pub.write_bytes(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(EvidenceError, match="Ed25519 or ECDSA P-256"):
        load_public_key(pub)


def test_encrypted_private_key_is_explained(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = tmp_path / "enc.key"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(EvidenceError, match="encrypted private key"):
        load_signer(path)


def test_ecdsa_p256_public_key_verifies_kms_style_signatures(tmp_path: Path) -> None:
    """KMS ECC_NIST_P256 / ECDSA_SHA_256 signatures are DER ECDSA over SHA-256 of the message."""
    from cryptography.hazmat.primitives import hashes

    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "kms.pub"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    verifier = load_public_key(path)
    sig = key.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    assert verifier.keyid == keyid_for(key.public_key())
    assert verifier.verify(sig, b"msg")
    assert not verifier.verify(sig, b"msh")


def test_load_verifiers_accepts_pem_or_keyring(tmp_path: Path) -> None:
    old = generate_keypair(tmp_path / "old.key")
    new = generate_keypair(tmp_path / "new.key")
    assert [v.keyid for v in load_verifiers(tmp_path / "new.pub")] == [new]

    ring = tmp_path / "keyring.json"
    ring.write_text(
        json.dumps(
            {
                "keys": [
                    keyring_entry(tmp_path / "old.pub", not_after=datetime(2026, 1, 1, tzinfo=UTC)),
                    keyring_entry(tmp_path / "new.pub", not_before=datetime(2026, 1, 1, tzinfo=UTC)),
                ]
            }
        )
    )
    verifiers = load_verifiers(ring)
    assert [v.keyid for v in verifiers] == [old, new]
    assert verifiers[0].not_after == datetime(2026, 1, 1, tzinfo=UTC)
    assert verifiers[0].valid_at(datetime(2025, 6, 1, tzinfo=UTC))
    assert not verifiers[0].valid_at(datetime(2026, 6, 1, tzinfo=UTC))
    assert verifiers[1].valid_at(datetime(2026, 6, 1, tzinfo=UTC))

    bare_list = tmp_path / "list.json"
    bare_list.write_text(json.dumps(json.loads(ring.read_text())["keys"]))
    assert [v.keyid for v in load_verifiers(bare_list)] == [old, new]


def test_keyring_with_a_wrong_keyid_is_refused(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    entry = keyring_entry(tmp_path / "k.pub")
    entry["keyid"] = "sha256:" + "0" * 64
    with pytest.raises(EvidenceError, match="does not match the key"):
        parse_keyring([entry], "ring.json")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "non-empty JSON list"),
        ({"keys": "x"}, "non-empty JSON list"),
        ([{"keyid": "sha256:x"}], r"keys\[0\]: public_key_pem is missing"),
        ([{"public_key_pem": "nope"}], "not a readable PEM public key"),
    ],
)
def test_bad_keyrings_say_what_is_wrong(doc: object, message: str) -> None:
    with pytest.raises(EvidenceError, match=message):
        parse_keyring(doc, "ring.json")


def test_keyring_timestamps_must_have_a_timezone(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    entry = keyring_entry(tmp_path / "k.pub")
    entry["not_after"] = "2026-01-01T00:00:00"
    with pytest.raises(EvidenceError, match="no timezone"):
        parse_keyring([entry])


def test_verify_key_that_is_neither_pem_nor_json(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    path.write_text("ssh-ed25519 AAAA")
    with pytest.raises(EvidenceError, match="neither a PEM public key nor a keyring"):
        load_verifiers(path)


def test_missing_public_key_points_at_the_pub_file(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match=r"public key file .*nope\.pub does not exist.*\.pub file written by"):
        load_public_key(tmp_path / "nope.pub")


def test_signer_repr_does_not_show_the_private_key(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k.key")
    assert "private_key" not in repr(load_signer(tmp_path / "k.key"))
