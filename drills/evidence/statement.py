"""in-toto Statement v1 around a drill predicate.

The Statement is the standard attestation shape (https://in-toto.io/Statement/v1):
subjects say *what* the claim is about by digest (the runbook, the restored
snapshot's manifest...), the predicate says *what happened*. Using it means
generic tooling (cosign, in-toto verifiers, policy engines) can read our
evidence without knowing this project.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from drills.errors import EvidenceError, VerificationError

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "build_statement",
    "check_statement",
    "subject_for_bytes",
    "subject_for_file",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://restore-drills.dev/drill/v1"
#: The DSSE payloadType of an in-toto statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def subject_for_bytes(name: str, data: bytes) -> dict[str, Any]:
    """A subject naming ``data`` by its SHA-256 (e.g. the runbook text as loaded)."""
    return {"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}


def subject_for_file(path: Path, name: str | None = None) -> dict[str, Any]:
    """A subject for a file's bytes; ``name`` defaults to the file name (paths differ between hosts)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EvidenceError(f"cannot read {path} to digest it as an evidence subject: {exc.strerror}") from exc
    return subject_for_bytes(name or Path(path).name, data)


def _check_subjects(subjects: object, error: type[EvidenceError]) -> list[dict[str, Any]]:
    if not isinstance(subjects, list) or not subjects:
        raise error("statement subject must be a non-empty list of {name, digest: {sha256}}")
    checked: list[dict[str, Any]] = []
    for index, subject in enumerate(subjects):
        where = f"subject[{index}]"
        if not isinstance(subject, dict):
            raise error(f"{where} must be an object with name and digest")
        name = subject.get("name")
        digest = subject.get("digest")
        if not isinstance(name, str) or not name:
            raise error(f"{where}.name must be a non-empty string")
        if not isinstance(digest, dict) or not digest:
            raise error(f"{where}.digest must be a non-empty object such as {{'sha256': HEX}}")
        for algo, value in digest.items():
            if not isinstance(value, str) or not value:
                raise error(f"{where}.digest.{algo} must be a non-empty hex string")
        sha256 = digest.get("sha256")
        if sha256 is not None and not _SHA256_HEX.fullmatch(sha256):
            raise error(f"{where}.digest.sha256 must be 64 lowercase hex characters, got {sha256!r}")
        checked.append({"name": name, "digest": dict(digest)})
    return checked


def build_statement(predicate: dict[str, Any], subjects: list[dict[str, Any]]) -> dict[str, Any]:
    """Wrap a drill predicate in an in-toto Statement v1 with our predicate type."""
    if not isinstance(predicate, dict):
        raise EvidenceError(f"predicate must be a dict, got {type(predicate).__name__}")
    return {
        "_type": STATEMENT_TYPE,
        "subject": _check_subjects(subjects, EvidenceError),
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def check_statement(statement: object) -> dict[str, Any]:
    """Raise :class:`VerificationError` saying exactly how ``statement`` is not one of our statements."""
    if not isinstance(statement, dict):
        raise VerificationError(f"payload must be a JSON object (an in-toto Statement), got {type(statement).__name__}")
    kind = statement.get("_type")
    if kind != STATEMENT_TYPE:
        raise VerificationError(f"payload _type is {kind!r}; expected {STATEMENT_TYPE!r}")
    predicate_type = statement.get("predicateType")
    if predicate_type != PREDICATE_TYPE:
        raise VerificationError(f"payload predicateType is {predicate_type!r}; expected {PREDICATE_TYPE!r}")
    _check_subjects(statement.get("subject"), VerificationError)
    if not isinstance(statement.get("predicate"), dict):
        raise VerificationError("payload predicate is missing or not an object")
    return statement
