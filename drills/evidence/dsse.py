"""DSSE v1 envelopes: sign bytes with a type, verify them offline.

DSSE (https://github.com/secure-systems-lab/dsse) signs the *pre-authentication
encoding* (PAE) of the payload type and body, never a re-serialization of
JSON, so there is nothing to canonicalize at verification time and the type
cannot be swapped under the signature.

Two deliberate strictnesses on top of the spec:

* base64 fields must be *padded and canonical* (re-encoding the decoded bytes
  in the same alphabet gives the same text), in the standard alphabet or, as
  the DSSE spec allows, the URL-safe one (never a mix of the two). Otherwise
  the unused low bits of the last character could be flipped without changing
  the signed bytes, and a tampered file would still verify. (The evidence
  store goes further: it writes the standard alphabet and, since a file must
  be byte-for-byte as written, names a URL-safe copy a re-encoding.)
* ``strict=True`` (what the evidence store uses) requires every signature to
  verify and to carry a ``keyid`` naming the key that verified it, and no field
  beyond the spec's (a renamed ``keyid`` must not pass as an extension). The spec
  treats ``keyid`` as an unauthenticated hint; for a stored evidence file we
  want any edit, hint included, to be detected.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drills.errors import VerificationError
from drills.evidence.keys import SigningKey, VerifyingKey

__all__ = [
    "VerifiedEnvelope",
    "b64decode_strict",
    "is_standard_b64",
    "open_envelope",
    "pae",
    "sign_envelope",
    "verify_envelope",
]


def pae(payload_type: str, payload: bytes) -> bytes:
    """``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths in bytes as decimal ASCII."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def b64decode_strict(text: str, what: str) -> bytes:
    """Decode padded base64 in the standard or the URL-safe alphabet (DSSE allows both), refusing
    a mix of the two and any other spelling of the same bytes."""
    urlsafe = "-" in text or "_" in text
    if urlsafe and ("+" in text or "/" in text):
        raise VerificationError(f"{what} mixes the standard and the URL-safe base64 alphabets")
    try:
        data = text.encode("ascii")
        if urlsafe:
            data = data.translate(_FROM_URLSAFE)
        raw = base64.b64decode(data, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not standard or URL-safe padded base64: {exc}") from None
    again = base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)
    if again.decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64 (padding or trailing bits altered)")
    return raw


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def is_standard_b64(text: str) -> bool:
    """Whether ``text`` is spelled in the standard alphabet (what this tool writes), not the URL-safe one."""
    return "-" not in text and "_" not in text


def sign_envelope(payload: bytes, payload_type: str, signer: SigningKey) -> dict[str, Any]:
    """Sign ``payload`` and wrap it: ``{"payloadType", "payload", "signatures": [{"keyid", "sig"}]}``."""
    sig = signer.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": signer.keyid, "sig": base64.b64encode(sig).decode("ascii")}],
    }


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a successful verification established: the bytes, their type, and which keys vouched for them."""

    payload: bytes
    payload_type: str
    verified_by: tuple[VerifyingKey, ...]


def _parse(envelope: object) -> dict[str, Any]:
    if isinstance(envelope, bytes | str):
        try:
            text = envelope.decode("utf-8") if isinstance(envelope, bytes) else envelope
            envelope = json.loads(text)
        except UnicodeDecodeError as exc:
            raise VerificationError(f"envelope is not UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise VerificationError(
                f"envelope is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
    if not isinstance(envelope, dict):
        raise VerificationError(f"envelope must be a JSON object, got {type(envelope).__name__}")
    return envelope


def _field(obj: dict[str, Any], name: str, where: str) -> str:
    if name not in obj:
        raise VerificationError(f"{where} has no {name!r} field")
    value = obj[name]
    if not isinstance(value, str):
        raise VerificationError(f"{where} field {name!r} must be a string, got {type(value).__name__}")
    return value


def _no_unknown_fields(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise VerificationError(f"{where} has unexpected field(s) {', '.join(map(repr, unknown))}")


def open_envelope(
    envelope: dict[str, Any] | str | bytes, verifiers: Sequence[VerifyingKey], *, strict: bool = False
) -> VerifiedEnvelope:
    """Verify a DSSE envelope and say which keys verified it.

    Every verifier is tried on every signature (the ``keyid`` is only a hint
    for choosing keys, never a reason to skip one). Without ``strict`` one
    verifying signature is enough; with it, see the module docstring.
    """
    env = _parse(envelope)
    if strict:
        _no_unknown_fields(env, {"payloadType", "payload", "signatures"}, "envelope")
    payload_type = _field(env, "payloadType", "envelope")
    payload = b64decode_strict(_field(env, "payload", "envelope"), "envelope payload")
    signatures = env.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError("envelope has no signatures (expected a non-empty 'signatures' list)")
    if not verifiers:
        raise VerificationError("no verification key given", hint="pass the signer's public key or a keyring")

    message = pae(payload_type, payload)
    verified: list[VerifyingKey] = []
    claimed: list[str] = []
    for index, entry in enumerate(signatures):
        where = f"envelope signatures[{index}]"
        if not isinstance(entry, dict):
            raise VerificationError(f"{where} must be an object with 'sig' and 'keyid'")
        if strict:
            _no_unknown_fields(entry, {"keyid", "sig"}, where)
        sig = b64decode_strict(_field(entry, "sig", where), f"{where}.sig")
        hint = entry.get("keyid")
        if hint is not None and not isinstance(hint, str):
            raise VerificationError(f"{where} field 'keyid' must be a string")
        if strict and not hint:
            raise VerificationError(
                f"{where} has no keyid: this tool writes the signing key's id beside every signature, "
                "so a signature without one was edited"
            )
        claimed.append(hint or "(no keyid)")
        match = next((v for v in verifiers if v.verify(sig, message)), None)
        if match is None:
            if strict:
                raise VerificationError(
                    f"{where} (keyid {hint or 'none'}) does not verify with any given key "
                    f"({', '.join(v.keyid for v in verifiers)}): the evidence was altered or signed by another key"
                )
            continue
        if strict and hint and hint != match.keyid:
            raise VerificationError(
                f"{where} verifies with key {match.keyid} but names keyid {hint}: the envelope was edited"
            )
        verified.append(match)
    if not verified:
        raise VerificationError(
            f"no signature verifies with the given key(s): the envelope names {', '.join(claimed)}; "
            f"tried {', '.join(v.keyid for v in verifiers)}",
            hint="the evidence was altered, or it was signed by a key you did not pass (try the keyring)",
        )
    return VerifiedEnvelope(payload=payload, payload_type=payload_type, verified_by=tuple(verified))


def verify_envelope(
    envelope: dict[str, Any] | str | bytes, verifiers: Sequence[VerifyingKey], *, strict: bool = False
) -> bytes:
    """Verify a DSSE envelope and return its payload bytes; raise :class:`VerificationError` otherwise."""
    return open_envelope(envelope, verifiers, strict=strict).payload
