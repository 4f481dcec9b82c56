"""Evidence on S3 with Object Lock: a copy no one, root included, can delete before its retention ends.

Each envelope is written locally first (that copy is the one the drill
signs and the one kept when the upload fails), then put to
``s3://BUCKET/PREFIX<runbook>/<run_id>.evidence.json`` with:

- Object Lock in COMPLIANCE mode until ``retention_days`` from now (not
  GOVERNANCE: a governance lock yields to ``s3:BypassGovernanceRetention``);
- SSE-KMS, with the runbook's key when given;
- its SHA-256 as an S3 checksum, so S3 refuses a body damaged in transit;
- ``If-None-Match: *``: the put fails if the key exists, so a retried push
  never replaces a record, and a planted object at our key is found, not
  overwritten.

What S3 says it stored is read back with ``head_object`` (moto's
``get_object_retention`` is broken; ``head_object`` carries the same facts)
and written beside the envelope as ``<run_id>.s3.json``. That sidecar is only
bookkeeping for ``drill evidence push``: the next drill of the runbook asks
S3 again and signs the answer into its own record (``previous_drill.storage``),
so the retention of record N is attested by record N+1.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drills.errors import DrillError, EvidenceError, InfrastructureError, InputError, PreflightError
from drills.evidence.keys import VerifyingKey
from drills.osutil import atomic_write

__all__ = ["Listing", "S3Store", "StoredObject", "parse_s3_url", "pending_runs", "push_pending", "sidecar_path"]

_SUFFIX = ".evidence.json"
MAX_OBJECT_BYTES = 64 * 1024 * 1024  # as drills.evidence.chain: far above any record; a huge object is refused


def sidecar_path(evidence_path: Path) -> Path:
    return evidence_path.with_name(evidence_path.name.removesuffix(_SUFFIX) + ".s3.json")


def _code(exc: BaseException) -> str:
    """The AWS error code; for our TransientError (retries ran out), the code of the last AWS error."""
    for e in (exc, exc.__cause__):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return str((response.get("Error") or {}).get("Code") or type(e).__name__)
    return type(exc).__name__


def parse_s3_url(text: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix ending in ``/`` or empty); bad input is an InputError."""
    if not text.startswith("s3://"):
        raise InputError(f"{text!r} is not an s3:// URL", hint="e.g. s3://drill-evidence/restore-drills/")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not bucket or not all(c.isalnum() or c in ".-" for c in bucket) or bucket != bucket.lower():
        raise InputError(f"{text!r}: {bucket!r} is not an S3 bucket name", hint="e.g. s3://drill-evidence/prefix/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class StoredObject:
    """The current version of one record's key on S3, as listed (nothing downloaded yet)."""

    key: str
    version_id: str  # "null" on a bucket without versioning (Object Lock buckets always have it)
    etag: str
    size: int
    last_modified: str
    older_versions: int = 0  # versions below the current one: a replaced record's locked original stays

    @property
    def cache_key(self) -> str:
        """What identifies these exact bytes: S3 never reuses a version id for other content."""
        return f"{self.key}\n{self.version_id}\n{self.etag}\n{self.size}\n{self.last_modified}"


@dataclass
class Listing:
    """The records under a prefix: the current version of each key, and the keys that were deleted."""

    objects: list[StoredObject] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (key, versions still kept under the marker)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)


@dataclass
class S3Store:
    """One runbook's evidence location on S3."""

    bucket: str
    prefix: str
    retention_days: int
    kms_key_id: str | None
    # An S3 client whose every operation goes through the one AWS call wrapper (drills.aws.clients.aws_client:
    # retries and throttling on the run's clock). Injected by whoever builds the store: this module sits
    # below drills.aws and never creates a client itself.
    client: Any = field(kw_only=True, repr=False)

    def _client(self) -> Any:
        return self.client

    def key_for(self, runbook: str, run_id: str) -> str:
        return f"{self.prefix}{runbook}/{run_id}{_SUFFIX}"

    def check_bucket(self) -> None:
        """Before anything starts: the bucket exists, is reachable and has Object Lock enabled."""
        s3 = self._client()
        try:
            conf = s3.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except Exception as exc:
            code = _code(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                raise PreflightError(
                    f"evidence.s3.bucket {self.bucket} does not have Object Lock enabled",
                    hint="create the bucket with Object Lock (it cannot be added to a bucket without versioning)",
                ) from None
            raise PreflightError(
                f"evidence.s3.bucket {self.bucket}: cannot read its Object Lock configuration ({code})",
                hint="check the bucket name, region and credentials (s3:GetBucketObjectLockConfiguration)",
            ) from None
        if conf.get("ObjectLockEnabled") != "Enabled":
            raise PreflightError(f"evidence.s3.bucket {self.bucket} does not have Object Lock enabled")

    def storage_facts(self, runbook: str, run_id: str) -> dict[str, Any]:
        """What S3 says about a stored record now: version, lock mode and date, encryption, checksum."""
        key = self.key_for(runbook, run_id)
        s3 = self._client()
        try:
            head = s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            return {"bucket": self.bucket, "key": key, "stored": False, "error": _code(exc)}
        until = head.get("ObjectLockRetainUntilDate")
        return {
            "bucket": self.bucket,
            "key": key,
            "stored": True,
            "version_id": head.get("VersionId"),
            "object_lock_mode": head.get("ObjectLockMode"),
            "retain_until": until.astimezone(UTC).isoformat().replace("+00:00", "Z") if until else None,
            "server_side_encryption": head.get("ServerSideEncryption"),
            "kms_key_id": head.get("SSEKMSKeyId"),
            "checksum_sha256": head.get("ChecksumSHA256"),
            "size": head.get("ContentLength"),
        }

    def push(self, evidence: Path, runbook: str, run_id: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Put one envelope under lock; the facts read back, also written to its sidecar. Never raises."""
        if self.retention_days < 1:  # a store built only to read history must never lock anything
            raise EvidenceError(f"s3://{self.bucket}/{self.prefix}: no retention configured; not pushing")
        body = evidence.read_bytes()
        digest = hashlib.sha256(body).digest()
        want = base64.b64encode(digest).decode()
        until = (now or datetime.now(UTC)) + timedelta(days=self.retention_days)
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key_for(runbook, run_id),
            "Body": body,
            "ContentType": "application/json",
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": until,
            "ServerSideEncryption": "aws:kms",
            "ChecksumAlgorithm": "SHA256",  # Object Lock puts need a checksum header; S3 checks the body against it
            "ChecksumSHA256": want,
            "IfNoneMatch": "*",
        }
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        status, error = "stored", None
        s3 = self._client()
        try:
            s3.put_object(**args)
        except Exception as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", "412"):
                status = "already-stored"  # a retry of an earlier push, or someone else's object: compare below
            else:
                status, error = "pending", f"{code}: {exc}"
        facts = self.storage_facts(runbook, run_id) if status != "pending" else {"stored": False}
        if status == "already-stored" and facts.get("checksum_sha256") != want:
            status, error = "conflict", "another object already holds this record's key; it was left as it is"
        elif status != "pending" and (facts.get("object_lock_mode") != "COMPLIANCE" or not facts.get("retain_until")):
            status, error = "unlocked", f"S3 reports lock mode {facts.get('object_lock_mode')!r}, not COMPLIANCE"
        doc: dict[str, Any] = {
            "status": status,
            "error": error,
            "sha256": digest.hex(),
            "requested_retain_until": until.isoformat(),
            "facts": facts,
        }
        _write_json(sidecar_path(evidence), doc)
        return doc

    # ------------------------------------------------------------------ reading (drill history)

    def _read_error(self, exc: BaseException, what: str) -> DrillError:
        """An S3 read failure as one of ours: bad input (exit 2), the environment or AWS (exit 3)."""
        code = _code(exc)
        where = f"s3://{self.bucket}/{self.prefix}"
        if code in ("NoSuchBucket", "InvalidBucketName"):
            return InputError(f"{where}: no such bucket ({code})", hint="check the bucket name and the account")
        if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return InfrastructureError(
                f"{where}: {what} was denied ({code})",
                hint="history reads need s3:ListBucketVersions on the bucket and s3:GetObjectVersion on its objects",
            )
        if code in ("NoCredentialsError", "NoRegionError", "PartialCredentialsError"):
            return PreflightError(f"{where}: no AWS credentials or region ({code})", hint="set AWS_PROFILE or keys")
        return InfrastructureError(f"{where}: {what} failed ({code}: {str(exc).splitlines()[0][:200]})")

    def listing(self, runbook: str | None = None) -> Listing:
        """The current version of every ``*.evidence.json`` under the prefix (one runbook's folder when given).

        Versions, not just keys: a delete on a versioned bucket only hides a record behind a delete
        marker (its locked version stays), which a plain listing would show as a record that never was.
        """
        s3 = self._client()
        prefix = self.prefix + (f"{runbook}/" if runbook else "")
        out = Listing()
        below: dict[str, int] = {}
        current: dict[str, StoredObject | None] = {}  # None: the newest entry is a delete marker
        marker: dict[str, str] = {}
        while True:
            try:
                page = s3.list_object_versions(Bucket=self.bucket, Prefix=prefix, **marker)
            except DrillError:
                raise  # retries ran out (TransientError): already ours
            except Exception as exc:
                raise self._read_error(exc, "listing the records") from exc
            _take_page(page, current, below)
            if not page.get("IsTruncated"):
                break
            marker = {"KeyMarker": page["NextKeyMarker"]}
            if page.get("NextVersionIdMarker"):
                marker["VersionIdMarker"] = page["NextVersionIdMarker"]
        for key in sorted(current):
            obj = current[key]
            if obj is None:
                out.deleted.append((key, below.get(key, 0)))
            else:
                out.objects.append(replace(obj, older_versions=below.get(key, 0)))
        return out

    def fetch(self, obj: StoredObject) -> bytes:
        """The bytes of exactly the listed version (a newer version put since is not what was listed)."""
        if obj.size > MAX_OBJECT_BYTES:
            raise EvidenceError(f"s3://{self.bucket}/{obj.key}: {obj.size} bytes, more than any record; not read")
        s3 = self._client()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key}
        if obj.version_id != "null":
            args["VersionId"] = obj.version_id
        try:
            body = s3.get_object(**args)["Body"]
            data: bytes = body.read(MAX_OBJECT_BYTES + 1)
        except DrillError:
            raise
        except Exception as exc:
            raise self._read_error(exc, f"reading {obj.key}") from exc
        if len(data) > MAX_OBJECT_BYTES:
            raise EvidenceError(f"s3://{self.bucket}/{obj.key}: more than {MAX_OBJECT_BYTES} bytes; not read")
        return data


def _take_page(page: dict[str, Any], current: dict[str, StoredObject | None], below: dict[str, int]) -> None:
    """Fold one ListObjectVersions page in: the current version (or delete marker) of each record key."""
    for v in page.get("Versions") or []:
        key = str(v.get("Key"))
        if not key.endswith(_SUFFIX):
            continue
        if not v.get("IsLatest"):
            below[key] = below.get(key, 0) + 1
            continue
        at = v.get("LastModified")
        current[key] = StoredObject(
            key=key,
            version_id=str(v.get("VersionId") or "null"),
            etag=str(v.get("ETag") or ""),
            size=int(v.get("Size") or 0),
            last_modified=at.isoformat() if isinstance(at, datetime) else str(at),
        )
    for d in page.get("DeleteMarkers") or []:
        if d.get("IsLatest") and str(d.get("Key")).endswith(_SUFFIX):
            current[str(d.get("Key"))] = None


def pending_runs(evidence_dir: Path) -> list[Path]:
    """Evidence files whose upload did not end stored (pending, failed or never tried)."""
    out = []
    for path in sorted(evidence_dir.glob(f"*{_SUFFIX}")):
        side = sidecar_path(path)
        try:
            status = json.loads(side.read_text()).get("status")
        except (OSError, ValueError):
            status = None
        if status not in ("stored", "already-stored"):
            out.append(path)
    return out


def push_pending(
    store: S3Store, evidence_dir: Path, runbook: str, verifiers: Sequence[VerifyingKey]
) -> list[tuple[Path, str, str | None]]:
    """Push this runbook's records that are not on S3 yet: ``(file, status, error)`` for each one tried.

    Only records that verify against ``verifiers`` and name this runbook are
    pushed: whatever lands under COMPLIANCE lock stays for years, so a planted
    or foreign file must never get there.
    """
    from drills.evidence.store import verify_evidence_bytes

    out: list[tuple[Path, str, str | None]] = []
    for path in pending_runs(evidence_dir):
        try:
            statement = verify_evidence_bytes(path.read_bytes(), verifiers, source=path.name)
        except DrillError as exc:
            out.append((path, "skipped", f"does not verify: {exc}"))
            continue
        predicate = statement.get("predicate") or {}
        name = str((predicate.get("runbook") or {}).get("name"))
        run_id = str((predicate.get("drill") or {}).get("id"))
        if name != runbook:
            continue  # another runbook's record sharing the directory
        if path.name != f"{run_id}{_SUFFIX}":
            out.append((path, "skipped", f"holds drill {run_id}: not this file's run"))
            continue
        doc = store.push(path, runbook, run_id)
        out.append((path, doc["status"], doc["error"]))
    return out
