"""Signed drill evidence: an in-toto Statement, RFC 8785 canonical, in a DSSE envelope.

Write with :func:`write_evidence`, check with :func:`read_and_verify`; the
pieces (canonical JSON, PAE, keys, secret guard) are exported for the CLI and
for KMS signers, which only need to satisfy :class:`SigningKey`. See
``docs/evidence.md`` for the format and for verifying without this package.
"""

from __future__ import annotations

from drills.evidence.canonical import canonical_json, check_json_value
from drills.evidence.dsse import VerifiedEnvelope, open_envelope, pae, sign_envelope, verify_envelope
from drills.evidence.keys import (
    Signer,
    SigningKey,
    Verifier,
    VerifyingKey,
    generate_keypair,
    keyid_for,
    keyring_entry,
    load_public_key,
    load_signer,
    load_verifiers,
    parse_keyring,
)
from drills.evidence.redact import assert_no_secrets, scrub_dsn
from drills.evidence.statement import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    build_statement,
    check_statement,
    subject_for_bytes,
    subject_for_file,
)
from drills.evidence.store import (
    envelope_bytes,
    evidence_path,
    read_and_verify,
    signed_at,
    summary,
    verify_evidence_bytes,
    write_evidence,
)

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Signer",
    "SigningKey",
    "VerifiedEnvelope",
    "Verifier",
    "VerifyingKey",
    "assert_no_secrets",
    "build_statement",
    "canonical_json",
    "check_json_value",
    "check_statement",
    "envelope_bytes",
    "evidence_path",
    "generate_keypair",
    "keyid_for",
    "keyring_entry",
    "load_public_key",
    "load_signer",
    "load_verifiers",
    "open_envelope",
    "pae",
    "parse_keyring",
    "read_and_verify",
    "scrub_dsn",
    "sign_envelope",
    "signed_at",
    "subject_for_bytes",
    "subject_for_file",
    "summary",
    "verify_envelope",
    "verify_evidence_bytes",
    "write_evidence",
]
