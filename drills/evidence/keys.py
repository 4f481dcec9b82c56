"""Signing and verification keys for evidence.

Locally (and in tests) evidence is signed with Ed25519 keys kept in PEM files.
Verification also accepts ECDSA P-256 public keys, because that is what an
AWS KMS ``ECC_NIST_P256`` key hands out through ``GetPublicKey``: evidence
signed in AWS stays verifiable offline with nothing but the public key.

Key ids
    ``keyid = "sha256:" + hex(sha256(DER SubjectPublicKeyInfo of the public key))``.
    DER SPKI (not the 32 raw Ed25519 bytes) is used because it names the
    algorithm and is exactly the blob KMS ``GetPublicKey`` returns, so one rule
    covers local and KMS keys. Anyone can recompute it with
    ``openssl pkey -pubin -in KEY.pub -outform DER | sha256sum``.

Rotation
    A *keyring* is a JSON file listing public keys with optional validity
    windows, so evidence signed by a retired key still verifies::

        {"keys": [{"keyid": "sha256:...", "public_key_pem": "-----BEGIN PUBLIC KEY-----\\n...",
                   "not_before": "2025-01-01T00:00:00Z", "not_after": "2026-01-01T00:00:00Z"}]}

    A bare JSON list of the same entries is accepted too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from drills.errors import EvidenceError, InputError

__all__ = [
    "PublicKey",
    "Signer",
    "SigningKey",
    "Verifier",
    "VerifyingKey",
    "generate_keypair",
    "keyid_for",
    "keyring_entry",
    "load_public_key",
    "load_signer",
    "load_verifiers",
    "parse_keyring",
    "public_key_from_pem",
    "verifier_for_signer",
]

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

_KEYGEN_HINT = "run `drill keygen --out {path}` to create a key pair"


class SigningKey(Protocol):
    """Anything that can sign evidence: a local Ed25519 key, or a KMS-backed signer."""

    @property
    def keyid(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


class VerifyingKey(Protocol):
    """Anything that can check a signature made by a :class:`SigningKey`."""

    @property
    def keyid(self) -> str: ...

    def verify(self, sig: bytes, data: bytes) -> bool: ...


def keyid_for(public_key: PublicKey) -> str:
    """The key id of a public key: ``sha256:`` + hex SHA-256 of its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Signer:
    """A local Ed25519 private key; ``sign`` returns the 64-byte signature."""

    keyid: str
    private_key: ed25519.Ed25519PrivateKey = field(repr=False)
    source: str = ""

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


@dataclass(frozen=True)
class Verifier:
    """A public key (Ed25519, or ECDSA P-256 with SHA-256 for KMS) and its validity window.

    ``not_before`` / ``not_after`` come from a keyring; ``None`` means unbounded.
    ``verify`` never raises on a bad signature: it answers ``False`` so the
    caller can try the next key.
    """

    keyid: str
    public_key: PublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None
    source: str = ""

    def verify(self, sig: bytes, data: bytes) -> bool:
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(sig, data)
            else:
                self.public_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def valid_at(self, when: datetime) -> bool:
        """Whether the keyring allowed this key to sign at ``when`` (bounds inclusive)."""
        if self.not_before is not None and when < self.not_before:
            return False
        return not (self.not_after is not None and when > self.not_after)


def verifier_for_signer(signer: object) -> Verifier | None:
    """The public half of a signer (local Ed25519, or KMS's P-256), so a drill trusts its own earlier records."""
    key = signer.private_key.public_key() if isinstance(signer, Signer) else getattr(signer, "public_key", None)
    if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        return Verifier(keyid_for(key), key, source="the signing key")
    return None


# --------------------------------------------------------------------------- key generation


def _write_new(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Create ``path`` with ``mode`` from the start (no window where a private key is world-readable)."""
    if force:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits; never adds any beyond `mode`
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(private_path: Path, public_path: Path | None = None, *, force: bool = False) -> str:
    """Create an Ed25519 key pair as PEM files and return its key id.

    The private key is PKCS#8 PEM, unencrypted, created with mode 0600. The
    public key (default: ``private_path`` with the suffix ``.pub``) is
    SubjectPublicKeyInfo PEM, mode 0644: it is what auditors receive. Existing
    files are never overwritten unless ``force=True``, because replacing a
    signing key silently orphans every evidence file signed with it.
    """
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path is not None else private_path.with_suffix(".pub")
    if public_path.resolve() == private_path.resolve():
        raise InputError(
            f"private and public key would both be written to {private_path}",
            hint="give the private key a name without the .pub suffix",
        )
    if not force:
        for path in (private_path, public_path):
            if path.exists():  # the user's choice of path, not a failure of evidence: bad input, exit 2
                raise InputError(
                    f"{path} already exists; refusing to overwrite a key",
                    hint="choose another --out path, or pass --force if the old key is really retired",
                )
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        public_path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(private_path, private_pem, 0o600, force=force)
        _write_new(public_path, public_pem, 0o644, force=force)
    except FileExistsError as exc:
        raise EvidenceError(f"{exc.filename} appeared while the key was being written; nothing overwritten") from exc
    except OSError as exc:
        raise EvidenceError(f"cannot write key file {exc.filename}: {exc.strerror}") from exc
    return keyid_for(key.public_key())


# --------------------------------------------------------------------------- loading


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        hint = (
            _KEYGEN_HINT.format(path=path)
            if what == "private key"
            else "pass the .pub file written by `drill keygen`, or a keyring JSON file"
        )
        raise EvidenceError(f"{what} file {path} does not exist", hint=hint) from None
    except IsADirectoryError:
        raise EvidenceError(f"{what} file {path} is a directory, not a PEM file") from None
    except OSError as exc:
        raise EvidenceError(f"cannot read {what} file {path}: {exc.strerror}") from exc


def load_signer(path: Path) -> Signer:
    """Load an Ed25519 private key from a PEM file written by :func:`generate_keypair`."""
    data = _read(path, "private key")
    if b"-----BEGIN" not in data:
        raise EvidenceError(f"{path} is not a PEM file", hint=_KEYGEN_HINT.format(path=path))
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise EvidenceError(
            f"{path} holds a public key; signing needs the private key",
            hint="pass the private key file (the one without .pub)",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise EvidenceError(
            f"{path} is an encrypted private key; restore-drills reads unencrypted PKCS#8 keys",
            hint="protect the file with permissions or a secret store, or use a KMS key",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(f"{path} is not a readable PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EvidenceError(
            f"{path} holds a {type(key).__name__.lstrip('_')} key; local signing uses Ed25519 keys",
            hint=_KEYGEN_HINT.format(path=path),
        )
    return Signer(keyid=keyid_for(key.public_key()), private_key=key, source=str(path))


def public_key_from_pem(data: bytes, where: str) -> PublicKey:
    """A PEM public key read from anywhere (a file, a keyring entry, a pack), refused with ``where`` named when it
    is a private key or of a kind the verifier does not take: the one gate every verifying key passes."""
    if b"PRIVATE KEY-----" in data:
        raise EvidenceError(
            f"{where} holds a private key; verification takes the public key",
            hint="pass the .pub file; never hand the private key to a verifier",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceError(f"{where} is not a readable PEM public key: {exc}") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise EvidenceError(
        f"{where} holds a {type(key).__name__.lstrip('_')} key; evidence is verified with Ed25519 or ECDSA P-256 keys"
    )


def load_public_key(path: Path) -> Verifier:
    """Load one PEM public key (Ed25519, or ECDSA P-256 as exported from KMS)."""
    data = _read(path, "public key")
    if b"-----BEGIN" not in data:
        raise EvidenceError(
            f"{path} is not a PEM file",
            hint="pass the .pub file written by `drill keygen`, or a keyring JSON file",
        )
    key = public_key_from_pem(data, str(path))
    return Verifier(keyid=keyid_for(key), public_key=key, source=str(path))


def _parse_time(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EvidenceError(f"{where}: expected an ISO-8601 timestamp string, got {value!r}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise EvidenceError(f"{where}: {value!r} is not an ISO-8601 timestamp") from None
    if when.tzinfo is None:
        raise EvidenceError(f"{where}: {value!r} has no timezone; write it in UTC with a Z")
    return when


def parse_keyring(doc: object, source: str = "keyring") -> list[Verifier]:
    """Turn a parsed keyring document into verifiers, checking every declared keyid.

    A keyid that does not match its key is refused: a keyring that lies about
    ids would make the "which key signed this" answer wrong.
    """
    entries = doc.get("keys") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise EvidenceError(f'{source}: a keyring is a non-empty JSON list of keys, or {{"keys": [...]}}')
    verifiers: list[Verifier] = []
    for index, entry in enumerate(entries):
        where = f"{source}: keys[{index}]"
        if not isinstance(entry, dict):
            raise EvidenceError(f"{where}: expected an object with keyid and public_key_pem")
        pem = entry.get("public_key_pem")
        if not isinstance(pem, str) or not pem.strip():
            raise EvidenceError(f"{where}: public_key_pem is missing")
        key = public_key_from_pem(pem.encode(), f"{where}.public_key_pem")
        actual = keyid_for(key)
        declared = entry.get("keyid")
        if declared is not None and declared != actual:
            raise EvidenceError(f"{where}: keyid {declared!r} does not match the key, whose keyid is {actual}")
        not_before = _parse_time(entry.get("not_before"), f"{where}.not_before")
        not_after = _parse_time(entry.get("not_after"), f"{where}.not_after")
        if not_before is not None and not_after is not None and not_after < not_before:
            raise EvidenceError(f"{where}: not_after is before not_before")
        verifiers.append(Verifier(actual, key, not_before, not_after, source=where))
    return verifiers


def load_verifiers(path: Path) -> list[Verifier]:
    """Load the keys ``drill verify --key PATH`` trusts: one PEM public key, or a keyring JSON file."""
    data = _read(path, "key")
    if data.lstrip().startswith(b"-----BEGIN"):
        return [load_public_key(path)]
    try:
        doc: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EvidenceError(
            f"{path} is neither a PEM public key nor a keyring JSON file",
            hint="pass the .pub file written by `drill keygen`, or a keyring JSON file",
        ) from None
    return parse_keyring(doc, str(path))


def keyring_entry(
    public_key_path: Path, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> dict[str, str]:
    """One keyring entry for a public key file, for building a keyring when a key is rotated."""
    verifier = load_public_key(public_key_path)
    entry = {
        "keyid": verifier.keyid,
        "public_key_pem": verifier.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii"),
    }
    if not_before is not None:
        entry["not_before"] = not_before.isoformat().replace("+00:00", "Z")
    if not_after is not None:
        entry["not_after"] = not_after.isoformat().replace("+00:00", "Z")
    return entry
