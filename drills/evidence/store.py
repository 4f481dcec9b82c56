"""Evidence files: write them atomically, read them back only if they verify.

One file per run, ``<out_dir>/<run_id>.evidence.json``, holding the DSSE
envelope as pretty JSON with sorted keys. Reading is deliberately stricter
than DSSE: every signature must verify and name its key (keyid), the file must be
named after the run it records, the
payload must be the RFC 8785 form of itself and an in-toto Statement with our
predicate type, and the file must be byte-for-byte what :func:`write_evidence`
produced. The last rule is what makes *any* single changed byte detectable
(a changed space or keyid does not break a signature); a file that was merely
reformatted is reported as such, after its signature was found valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from drills import osutil
from drills.errors import EvidenceError, VerificationError
from drills.evidence.canonical import canonical_json
from drills.evidence.dsse import is_standard_b64, open_envelope, sign_envelope
from drills.evidence.keys import SigningKey, Verifier, VerifyingKey
from drills.evidence.redact import assert_no_secrets, scrub_record
from drills.evidence.statement import PAYLOAD_TYPE, build_statement, check_statement

__all__ = [
    "EVIDENCE_SUFFIX",
    "atomic_write",
    "check_file_name",
    "envelope_bytes",
    "evidence_path",
    "read_and_verify",
    "signed_at",
    "summary",
    "verify_evidence_bytes",
    "write_evidence",
]

EVIDENCE_SUFFIX = ".evidence.json"
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    """The one on-disk spelling of an envelope: 2-space indent, sorted keys, ASCII, final newline."""
    return (json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def evidence_path(out_dir: Path, run_id: str) -> Path:
    """Where the evidence of ``run_id`` lives; refuses ids that could escape ``out_dir``."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise EvidenceError(f"run id {run_id!r} cannot name an evidence file (letters, digits, '.', '_', '-'; no '..')")
    return Path(out_dir) / f"{run_id}{EVIDENCE_SUFFIX}"


def atomic_write(final: Path, data: bytes) -> None:
    """:func:`drills.osutil.atomic_write` (a crash leaves the old file or the whole new one) of an
    evidence file, 0644 (evidence is for auditors, not secret), its directory created; failures are
    :class:`EvidenceError`."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        osutil.atomic_write(final, data, mode=0o644)
    except OSError as exc:
        raise EvidenceError(f"cannot write evidence to {final}: {exc.strerror or exc}") from exc


def write_evidence(
    predicate: dict[str, Any],
    subjects: list[dict[str, Any]],
    out_dir: Path,
    run_id: str,
    signer: SigningKey,
    *,
    secrets: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Build, canonicalize, sign and atomically write the evidence of one run; return its path.

    ``secrets`` (database passwords and the like) are checked for before
    signing: evidence containing one is refused. An existing evidence file is
    not replaced unless ``overwrite=True``: signed records are meant to be kept.
    Temp file in the same directory + fsync + rename + directory fsync, so a
    crash leaves either no file or a complete one.
    """
    final = evidence_path(out_dir, run_id)
    statement = build_statement(scrub_record(predicate), subjects)  # a DSN in an error message is masked
    assert_no_secrets(statement, list(secrets))  # a bare password is refused
    data = envelope_bytes(sign_envelope(canonical_json(statement), PAYLOAD_TYPE, signer))
    if final.exists() and not overwrite:
        raise EvidenceError(
            f"{final} already exists; refusing to replace signed evidence",
            hint="use a new run id, or overwrite explicitly",
        )
    atomic_write(final, data)
    return final


# --------------------------------------------------------------------------- reading


def _get(obj: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def signed_at(statement: dict[str, Any]) -> datetime | None:
    """When the drill says it finished (else started): the time a keyring validity window is checked at."""
    for key in ("finished_at", "started_at"):
        value = _get(statement, "predicate", "drill", key)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            if when.tzinfo is not None:
                return when
    return None


def _check_windows(verified_by: Sequence[VerifyingKey], statement: dict[str, Any], at: datetime | None) -> None:
    windowed = [v for v in verified_by if isinstance(v, Verifier) and (v.not_before or v.not_after)]
    if not windowed:
        return
    when = at or signed_at(statement)
    if when is None:
        raise VerificationError(
            "the signing key has a validity window but the evidence records no predicate.drill.finished_at "
            "or started_at to check it against",
            hint="verify with the single public key instead of the keyring if you accept that",
        )
    for verifier in windowed:
        if not verifier.valid_at(when):
            raise VerificationError(
                f"signed by key {verifier.keyid}, which the keyring allows only from {verifier.not_before} "
                f"to {verifier.not_after}; the evidence dates itself {when.isoformat()}"
            )


def check_file_name(statement: dict[str, Any], name: str, source: str) -> None:
    """The file must be named after the run it records: another run's valid envelope copied over this
    run's file name would otherwise pass as this run's evidence."""
    run_id = _get(statement, "predicate", "drill", "id")
    expected = f"{run_id}{EVIDENCE_SUFFIX}" if isinstance(run_id, str) else None
    if name != expected:
        raise VerificationError(
            f"{source}: the file is named {name!r} but records drill.id {run_id!r} (expected {expected!r}): "
            "a renamed file is another run's evidence",
            hint="verify the file under the name the tool wrote it with",
        )


def verify_evidence_bytes(
    data: bytes,
    verifiers: Sequence[VerifyingKey],
    *,
    source: str = "evidence",
    at: datetime | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Verify the bytes of an evidence file and return its in-toto statement (see the module docstring).

    ``name`` (the file's name) must be ``<drill.id>.evidence.json`` when given.
    """
    try:
        envelope = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise VerificationError(f"{source} is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise VerificationError(f"{source} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(envelope, dict):
        raise VerificationError(f"{source} is not a DSSE envelope (a JSON object)")

    opened = open_envelope(envelope, verifiers, strict=True)
    if opened.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"{source}: payloadType is {opened.payload_type!r}; expected {PAYLOAD_TYPE!r}")
    try:
        statement = json.loads(opened.payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{source}: the signed payload is not UTF-8 JSON: {exc}") from None
    try:
        canonical = canonical_json(statement)
    except EvidenceError as exc:
        raise VerificationError(f"{source}: the signed payload cannot be canonical JSON: {exc}") from None
    if canonical != opened.payload:
        raise VerificationError(f"{source}: the signed payload is not RFC 8785 canonical JSON")
    check_statement(statement)
    _check_windows(opened.verified_by, statement, at)
    b64_fields = [envelope["payload"], *(s["sig"] for s in envelope["signatures"])]
    if envelope_bytes(envelope) != data or not all(is_standard_b64(text) for text in b64_fields):
        raise VerificationError(
            f"{source}: the signature is valid but the file is not byte-for-byte as written "
            "(whitespace, key order, escaping or base64 alphabet changed)",
            hint="verify the original file; a reformatted copy cannot be told apart from an edited one",
        )
    if name is not None:
        check_file_name(statement, name, source)
    result: dict[str, Any] = statement
    return result


def read_and_verify(path: Path, verifiers: Sequence[VerifyingKey], *, at: datetime | None = None) -> dict[str, Any]:
    """Read an evidence file and return its statement only if everything checks; else :class:`VerificationError`.

    ``at`` overrides the time checked against keyring validity windows
    (default: the drill's own ``finished_at`` / ``started_at``).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise EvidenceError(f"evidence file {path} does not exist") from None
    except OSError as exc:
        raise EvidenceError(f"cannot read evidence file {path}: {exc.strerror}") from exc
    return verify_evidence_bytes(data, verifiers, source=str(path), at=at, name=Path(path).name)


# --------------------------------------------------------------------------- summary


def _fmt_ms(value: object) -> str:
    from drills.report import human_ms  # one way to write durations, in the summary and the report

    return human_ms(value, missing="unknown")


def _objective_line(results: object, objectives: object, kind: str) -> str:
    achieved = _get(results, f"achieved_{kind}_ms")
    objective = _get(results, f"{kind}_objective_ms")
    if objective is None:
        objective = _get(objectives, f"{kind}_ms")
    if objective is None:
        objective = _get(results, "objectives", f"{kind}_ms")
    met = _get(results, f"{kind}_met")
    if not isinstance(met, bool) and isinstance(achieved, int) and isinstance(objective, int):
        met = achieved <= objective
    status = "" if not isinstance(met, bool) else (" (met)" if met else " (MISSED)")
    return f"{_fmt_ms(achieved)} achieved, objective {_fmt_ms(objective)}{status}"


def summary(statement: dict[str, Any]) -> str:
    """A few human lines about a verified statement; every field is optional (shown as ``unknown``)."""
    predicate = _get(statement, "predicate")
    results = _get(predicate, "results")
    objectives = _get(predicate, "objectives")
    findings = _get(predicate, "validation", "findings")
    if isinstance(findings, list):
        failed = sum(1 for f in findings if not (isinstance(f, dict) and f.get("passed") is True))
        findings_line = f"{failed} failed of {len(findings)}"
    else:
        findings_line = "unknown"

    def text(value: object) -> str:
        return value if isinstance(value, str) and value else "unknown"

    rows = [
        ("run", text(_get(predicate, "drill", "id"))),
        ("runbook", text(_get(predicate, "runbook", "name"))),
        ("verdict", text(_get(results, "verdict"))),
        ("RTO", _objective_line(results, objectives, "rto")),
        ("RPO", _objective_line(results, objectives, "rpo")),
        ("findings", findings_line),
    ]
    return "\n".join(f"{label:<9}{value}" for label, value in rows)
