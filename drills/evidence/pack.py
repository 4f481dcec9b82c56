"""Evidence packs: a period of verified drill records, handed to an auditor as one folder or zip.

A pack holds the envelopes themselves (``envelopes/``), the public keys that
verified them (``keys/``), a transcript of every file checked
(``verification.txt``), the HTML report rendered from the verified records
only (``report.html``) and ``manifest.json`` with the SHA-256 of every file.

The envelopes are the evidence; everything else is derived from them and can
be checked offline: ``drill verify --pack`` recomputes every digest,
verifies every envelope against keys the auditor supplies (or, failing
that, the pack's own keys, with a warning to compare their key ids with the
ones the auditor was given), and renders the report again from the
envelopes, which must give the same bytes. The manifest is not signed:
what it could hide (an unverifiable file left out of the transcript) never
passes as a drill, and records left out of the period show as gaps in the
runbook's chain sequence.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.errors import EvidenceError, InputError, VerificationError
from drills.evidence.chain import Head, head_path, read_head
from drills.evidence.keys import Verifier, VerifyingKey
from drills.evidence.pack_html import render_pack_html
from drills.evidence.period import DrillRow, parse_time, row_of, summarize_period
from drills.evidence.store import verify_evidence_bytes

__all__ = ["PACK_FORMAT", "PackResult", "build_pack", "verify_pack"]

PACK_FORMAT = "restore-drills-pack/v1"
_SUFFIX = ".evidence.json"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same pack twice gives the same zip


@dataclass(frozen=True)
class PackResult:
    out: Path
    records: int
    unverified: tuple[tuple[str, str], ...]
    keyids: tuple[str, ...]
    gaps: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (runbook, chain positions absent inside the period)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(data: bytes, name: str, verifiers: Sequence[VerifyingKey]) -> tuple[dict[str, Any], set[str]]:
    """The verified statement and the keyids that signed it; the file name must be the drill's id."""
    statement = verify_evidence_bytes(data, verifiers, source=name)
    run_id = str(((statement.get("predicate") or {}).get("drill") or {}).get("id"))
    if name != f"{run_id}{_SUFFIX}":
        raise VerificationError(f"{name} holds drill {run_id}: a record under another run's file name")
    envelope = json.loads(data)
    ids = {str(s.get("keyid")) for s in envelope.get("signatures", []) if isinstance(s, dict)}
    return statement, ids & {v.keyid for v in verifiers}


def _in_scope(row: DrillRow, since: datetime, until: datetime, runbooks: Sequence[str] | None) -> bool:
    return since <= row.finished_at < until and (not runbooks or row.runbook in runbooks)


def _public_pem(v: Verifier) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return v.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _meta(generated_at: str, tool_version: str, keyids: Sequence[str], files: int) -> dict[str, str]:
    return {
        "generated_at": generated_at,
        "tool_version": tool_version,
        "keyids": ", ".join(keyids),
        "files": str(files),
    }


def build_pack(
    evidence_dir: Path,
    verifiers: Sequence[Verifier],
    *,
    since: datetime,
    until: datetime,
    out: Path,
    tool_version: str,
    runbooks: Sequence[str] | None = None,
    now: datetime | None = None,
) -> PackResult:
    """Collect the period's verified records from ``evidence_dir`` into a pack at ``out`` (a dir, or ``.zip``)."""
    if not evidence_dir.is_dir():
        raise InputError(f"evidence directory {evidence_dir} does not exist", hint="pass --evidence-dir")
    if until <= since:
        raise InputError(f"--until {until.isoformat()} is not after --since {since.isoformat()}")
    files: dict[str, bytes] = {}
    transcript: list[str] = []
    rows: list[DrillRow] = []
    unverified: list[tuple[str, str]] = []
    used_keys: set[str] = set()
    for path in sorted(evidence_dir.glob(f"*{_SUFFIX}")):
        data = path.read_bytes()
        try:
            statement, ids = _check(data, path.name, verifiers)
        except (VerificationError, EvidenceError) as exc:
            unverified.append((path.name, str(exc)))
            transcript.append(f"FAIL {path.name} sha256={_sha(data)} {exc}")
            continue
        row = row_of(statement, file=path.name, envelope_sha256=_sha(data))
        if not _in_scope(row, since, until, runbooks):
            continue
        rows.append(row)
        used_keys |= ids
        files[f"envelopes/{path.name}"] = data
        transcript.append(
            f"OK   {path.name} sha256={_sha(data)} keyid={','.join(sorted(ids))} "
            f"runbook={row.runbook} finished_at={row.finished_at.isoformat()} verdict={row.verdict}"
        )
    for name in sorted({r.runbook for r in rows}):
        head = read_head(evidence_dir, name, verifiers)
        if isinstance(head, Head):
            files[f"chain/{head.file}"] = head_path(evidence_dir, name).read_bytes()
            transcript.append(f"HEAD {head.file} sha256={head.sha256} runbook={name} seq={head.seq} run={head.run_id}")
        else:
            why = head.message if head is not None else "no chain head in the evidence directory"
            transcript.append(f"FAIL chain head of {name}: {why}")
    for v in verifiers:
        if v.keyid in used_keys:
            files[f"keys/{v.keyid.replace(':', '-')}.pub"] = _public_pem(v)
    generated_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    keyids = sorted(used_keys)
    summary = summarize_period(rows, since, until, unverified)
    files["verification.txt"] = ("\n".join(transcript) + "\n").encode()
    files["report.html"] = render_pack_html(summary, _meta(generated_at, tool_version, keyids, len(rows))).encode()
    manifest = {
        "format": PACK_FORMAT,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "runbooks": list(runbooks) if runbooks else None,
        "generated_at": generated_at,
        "tool_version": tool_version,
        "keyids": keyids,
        "unverified": [{"file": f, "why": why} for f, why in unverified],
        "files": {name: _sha(data) for name, data in sorted(files.items())},
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    _write(out, files)
    gaps = tuple((rb.name, rb.missing_seq) for rb in summary.runbooks if rb.missing_seq)
    return PackResult(out, len(rows), tuple(unverified), tuple(keyids), gaps)


def _write(out: Path, files: dict[str, bytes]) -> None:
    """All of the pack or nothing at ``out``: a half-written pack (a full disk) would look like a pack with
    fewer records. A directory is built beside ``out`` and renamed into place; a zip goes through
    :func:`~drills.osutil.atomic_write`."""
    import shutil
    import tempfile

    from drills.osutil import atomic_write

    if out.exists() and (out.is_file() or any(out.iterdir())):
        raise InputError(f"{out} already exists", hint="give a new path for the pack")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent} does not exist", hint="create the folder, or give another --out")
    try:
        if out.suffix == ".zip":
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, _ZIP_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    z.writestr(info, files[name])
            atomic_write(out, buf.getvalue())
            return
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            for name, data in files.items():
                target = partial / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            partial.chmod(0o755)
            if out.is_dir():
                out.rmdir()  # empty (checked above): the rename needs the name free
            partial.rename(out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise EvidenceError(f"{out}: the pack could not be written ({why}); nothing was left there") from None


def _read_pack(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    try:
        with zipfile.ZipFile(path) as z:
            return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path} is neither a pack directory nor a zip file: {exc}") from None


def _pack_keys(files: dict[str, bytes]) -> list[Verifier]:
    from drills.evidence.keys import keyid_for, public_key_from_pem

    out = []
    for name, data in sorted(files.items()):
        if name.startswith("keys/") and name.endswith(".pub"):
            key = public_key_from_pem(data, name)
            out.append(Verifier(keyid_for(key), key, source=name))
    return out


@dataclass(frozen=True)
class PackCheck:
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    records: int


def verify_pack(path: Path, verifiers: Sequence[Verifier] | None) -> PackCheck:
    """Every check an auditor needs, offline; ``problems`` empty means the pack holds."""
    files = _read_pack(path)
    problems: list[str] = []
    warnings: list[str] = []
    try:
        manifest = json.loads(files.pop("manifest.json"))
    except KeyError:
        raise VerificationError(f"{path} has no manifest.json: not a pack") from None
    except json.JSONDecodeError as exc:
        raise VerificationError(f"{path}: manifest.json is not JSON: {exc}") from None
    if manifest.get("format") != PACK_FORMAT:
        raise VerificationError(f"{path}: manifest format {manifest.get('format')!r}, expected {PACK_FORMAT!r}")
    listed: dict[str, str] = manifest.get("files") or {}
    for name in sorted(set(listed) | set(files)):
        if name not in files:
            problems.append(f"{name} is listed in the manifest but missing")
        elif name not in listed:
            problems.append(f"{name} is in the pack but not in the manifest")
        elif _sha(files[name]) != listed[name]:
            problems.append(f"{name} was changed after the pack was made (SHA-256 differs from the manifest)")
    if verifiers is None:
        verifiers = _pack_keys(files)
        warnings.append(
            "no --key given: the envelopes were checked with the keys inside the pack "
            f"({', '.join(v.keyid for v in verifiers) or 'none'}); compare them with the key ids you were given"
        )
    since, until = parse_time(manifest["since"]), parse_time(manifest["until"])
    runbooks = manifest.get("runbooks")
    rows: list[DrillRow] = []
    keyids: set[str] = set()
    for name in sorted(n for n in files if n.startswith("envelopes/")):
        base = name.removeprefix("envelopes/")
        try:
            statement, ids = _check(files[name], base, verifiers)
        except (VerificationError, EvidenceError) as exc:
            problems.append(str(exc))
            continue
        row = row_of(statement, file=base, envelope_sha256=_sha(files[name]))
        if not _in_scope(row, since, until, runbooks):
            problems.append(f"{base} finished {row.finished_at.isoformat()}, outside the pack's period or runbooks")
            continue
        rows.append(row)
        keyids |= ids
    problems += _check_heads(files, verifiers, rows)
    unverified = tuple((u["file"], u["why"]) for u in manifest.get("unverified") or [])
    summary = summarize_period(rows, since, until, unverified)
    # the manifest is not signed, so a forger can drop a record and fix the manifest up; the signed
    # records' chain positions cannot be renumbered, so a hole between two of them gives it away
    problems += [
        f"{rb.name}: chain positions {', '.join(str(s) for s in rb.missing_seq)} are missing between "
        "the pack's records (removed from the pack, or never verified when it was made)"
        for rb in summary.runbooks
        if rb.missing_seq
    ]
    meta = _meta(manifest.get("generated_at", ""), manifest.get("tool_version", ""), sorted(keyids), len(rows))
    if files.get("report.html") != render_pack_html(summary, meta).encode():
        problems.append("report.html is not what the verified envelopes render to (edited, or made from other records)")
    return PackCheck(tuple(problems), tuple(warnings), len(rows))


def _check_heads(files: dict[str, bytes], verifiers: Sequence[Verifier], rows: Sequence[DrillRow]) -> list[str]:
    """Each chain head in the pack verifies and is not behind the newest record the pack holds."""
    import tempfile

    problems: list[str] = []
    heads = {n.removeprefix("chain/"): d for n, d in files.items() if n.startswith("chain/")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in heads.items():
            (Path(tmp) / name).write_bytes(data)
        for name in heads:
            runbook = name.removesuffix(".chain-head.json")
            head = read_head(Path(tmp), runbook, verifiers)
            newest = max((r.seq or 0 for r in rows if r.runbook == runbook), default=0)
            if not isinstance(head, Head):
                problems.append(f"chain/{name}: {head.message if head else 'missing'}")
            elif head.seq < newest:
                problems.append(f"chain/{name} names seq {head.seq}, older than record seq {newest} in the pack")
    return problems


def parse_when(text: str, what: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or a full ISO 8601 time with an offset, for --since/--until."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
