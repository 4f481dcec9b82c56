"""Sign evidence with an AWS KMS asymmetric key (``ECC_NIST_P256``, ``ECDSA_SHA_256``).

:class:`KmsSigner` satisfies :class:`drills.evidence.keys.SigningKey`, so
:func:`drills.evidence.store.write_evidence` takes it like a local key. The
private key never leaves KMS; what auditors need is the public key, which
:meth:`KmsSigner.public_key_pem` and :func:`export_public_key` hand out. A KMS
signature is an ordinary DER-encoded ECDSA P-256 / SHA-256 signature over the
DSSE PAE, so :class:`drills.evidence.keys.Verifier` checks it offline.

Key id
    ``"sha256:" + hex(sha256(DER SubjectPublicKeyInfo))``, the same rule as
    local keys (the DER SPKI is exactly what ``GetPublicKey`` returns). Never
    the alias, which can be repointed to another key, and not the ARN either,
    so keyrings and ``drill verify``'s keyid check work unchanged.

Message type
    ``"DIGEST"`` (the default, for production): the signer sends
    ``sha256(data)`` with ``MessageType=DIGEST``, because ``MessageType=RAW``
    is limited to 4096 bytes and a drill's PAE can be larger. KMS then signs
    the digest as ECDSA_SHA_256 would have hashed it, so the signature verifies
    over the full ``data``. ``"RAW"`` sends ``data`` itself (at most 4096
    bytes); it exists for emulators that mishandle ``DIGEST`` (moto hashes the
    digest once more).

IAM
    ``kms:GetPublicKey`` (once, at construction) and ``kms:Sign`` on the key.

Calls
    Through :class:`drills.aws.calls.AwsCaller`, like every other AWS call of the tool: botocore's
    own retries off, throttling and 5xx retried with jittered backoff on the injected clock, each
    call bounded by :data:`CALL_BUDGET_SECONDS`.

boto3 is imported lazily inside the constructor: the CLI must start fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drills.aws.calls import AwsCaller, client_config, error_code
from drills.clock import Clock, SystemClock
from drills.errors import EvidenceError, TransientError
from drills.osutil import atomic_write

__all__ = [
    "CALL_BUDGET_SECONDS",
    "CREATE_KEY_HINT",
    "RAW_MESSAGE_LIMIT",
    "SIGNING_ALGORITHM",
    "KmsSigner",
    "export_public_key",
]

SIGNING_ALGORITHM = "ECDSA_SHA_256"
RAW_MESSAGE_LIMIT = 4096  # bytes; KMS Sign refuses larger RAW messages
CALL_BUDGET_SECONDS = 60.0  # one KMS call, retries included: signing must not hold a drill's evidence for long
CREATE_KEY_HINT = (
    "create a signing key with `aws kms create-key --key-spec ECC_NIST_P256 --key-usage SIGN_VERIFY` "
    "and put its ARN in the runbook as evidence: {kms_key_id: arn:aws:kms:...}"
)
_MESSAGE_TYPES = ("DIGEST", "RAW")

# KMS error codes -> what to tell the operator. "{key}" and "{action}" are filled in.
_ACCESS_CODES = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}
_NOT_FOUND_CODES = {"NotFoundException", "NotFound", "InvalidArnException"}
_STATE_CODES = {"DisabledException", "KMSInvalidStateException", "KeyUnavailableException"}
_WRONG_KIND_CODES = {"UnsupportedOperationException", "InvalidKeyUsageException"}


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        err = response.get("Error")
        if isinstance(err, Mapping) and err.get("Message"):
            return str(err["Message"])
    return str(exc)


def _region_of(key_id: str) -> str | None:
    """The region of a key ARN (``arn:aws:kms:REGION:ACCOUNT:key/...``), else None."""
    parts = key_id.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms" and parts[3]:
        return parts[3]
    return None


class KmsSigner:
    """A :class:`~drills.evidence.keys.SigningKey` whose private key lives in AWS KMS.

    ``key_id`` is a key id, key ARN, alias name or alias ARN (prefer the key
    ARN: it also fixes the region). ``session`` is a ``boto3.Session`` (None:
    the default session, region from the ARN or the environment).
    ``message_type`` is ``"DIGEST"`` (production) or ``"RAW"`` (emulators; at
    most 4096 bytes per signature). ``clock`` paces retries (tests pass a fake one).

    Construction calls ``GetPublicKey`` once and refuses a key that is not an
    ECC_NIST_P256 ``SIGN_VERIFY`` key offering ``ECDSA_SHA_256``. Every AWS
    failure surfaces as :class:`~drills.errors.EvidenceError` naming the key and
    the missing permission or state.
    """

    def __init__(
        self,
        key_id: str,
        session: Any = None,
        *,
        message_type: Literal["DIGEST", "RAW"] | str = "DIGEST",
        clock: Clock | None = None,
    ):
        if not isinstance(key_id, str) or not key_id.strip():
            raise EvidenceError("KMS signing needs a key id or ARN", hint=CREATE_KEY_HINT)
        if message_type not in _MESSAGE_TYPES:
            raise EvidenceError(f"KMS message_type must be DIGEST or RAW, not {message_type!r}")
        self.key_id = key_id
        self.message_type = message_type
        self._clock = clock or SystemClock()
        self._client = self._make_client(session)
        response = self._call("GetPublicKey", "kms:GetPublicKey", KeyId=key_id)
        self.key_arn: str = str(response.get("KeyId") or key_id)
        self._check_key(response)
        der = response.get("PublicKey")
        if not isinstance(der, bytes | bytearray):
            raise EvidenceError(f"KMS key {key_id}: GetPublicKey returned no public key")
        try:
            public_key = serialization.load_der_public_key(bytes(der))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EvidenceError(f"KMS key {key_id}: the public key from GetPublicKey is unreadable: {exc}") from None
        if not (isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1)):
            raise EvidenceError(
                f"KMS key {key_id} is not an ECC_NIST_P256 key ({type(public_key).__name__.lstrip('_')})",
                hint=CREATE_KEY_HINT,
            )
        self.public_key: ec.EllipticCurvePublicKey = public_key
        # Recomputed from the key rather than hashing KMS's bytes, so the id is exactly keys.keyid_for's.
        spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._keyid = "sha256:" + hashlib.sha256(spki).hexdigest()

    # ------------------------------------------------------------------ SigningKey

    @property
    def keyid(self) -> str:
        return self._keyid

    def sign(self, data: bytes) -> bytes:
        """A DER ECDSA P-256 signature over SHA-256 of ``data``, made by KMS."""
        if self.message_type == "DIGEST":
            message, kind = hashlib.sha256(data).digest(), "DIGEST"
        else:
            if len(data) > RAW_MESSAGE_LIMIT:
                raise EvidenceError(
                    f"KMS key {self.key_id}: {len(data)} bytes to sign exceed the {RAW_MESSAGE_LIMIT}-byte "
                    "limit of MessageType=RAW",
                    hint='use message_type="DIGEST" (the default), which signs a SHA-256 digest of any size',
                )
            message, kind = bytes(data), "RAW"
        response = self._call(
            "Sign",
            "kms:Sign",
            KeyId=self.key_id,
            Message=message,
            MessageType=kind,
            SigningAlgorithm=SIGNING_ALGORITHM,
        )
        sig = response.get("Signature")
        if not isinstance(sig, bytes | bytearray) or not sig:
            raise EvidenceError(f"KMS key {self.key_id}: Sign returned no signature")
        return bytes(sig)

    # ------------------------------------------------------------------ public key

    def public_key_pem(self) -> str:
        """The SubjectPublicKeyInfo PEM of the key: what auditors pass to ``drill verify --key``."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def __repr__(self) -> str:
        return f"KmsSigner(key_id={self.key_id!r}, keyid={self._keyid!r}, message_type={self.message_type!r})"

    # ------------------------------------------------------------------ internals

    def _make_client(self, session: Any) -> Any:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise EvidenceError("KMS signing needs boto3", hint="pip install boto3") from exc
        if session is None:
            session = boto3.Session()
        region = _region_of(self.key_id) or getattr(session, "region_name", None)
        try:
            return session.client("kms", region_name=region, config=client_config())
        except Exception as exc:  # botocore.exceptions.NoRegionError and friends
            raise EvidenceError(
                f"cannot create a KMS client for key {self.key_id}: {exc}",
                hint="pass the key ARN (it names the region) or set AWS_REGION",
            ) from exc

    def _call(self, operation: str, action: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self._client, "get_public_key" if operation == "GetPublicKey" else "sign")
        call = AwsCaller(self._clock, self._clock.monotonic_ns() + int(CALL_BUDGET_SECONDS * 1e9))
        try:
            result: dict[str, Any] = call(method, **params)
        except TransientError as exc:  # throttled or unavailable through every retry
            raise EvidenceError(
                f"KMS {operation} for key {self.key_id} failed: {exc}",
                hint="KMS is throttling or unavailable; sign again later (`drill` keeps the unsigned run's journal)",
            ) from exc
        except ClientError as exc:
            raise self._translate(exc, operation, action) from exc
        except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable...
            raise EvidenceError(
                f"KMS {operation} for key {self.key_id} failed: {exc}",
                hint=f"check AWS credentials and region; the caller needs {action} on the key",
            ) from exc
        return result

    def _translate(self, exc: BaseException, operation: str, action: str) -> EvidenceError:
        code = error_code(exc) or "error"
        detail = _error_message(exc)
        key = self.key_id
        if code in _ACCESS_CODES:
            return EvidenceError(
                f"KMS {operation} on key {key} was denied ({code}): the caller lacks {action}",
                hint=f"grant kms:Sign and kms:GetPublicKey on {key} in the IAM policy and the key policy",
            )
        if code in _NOT_FOUND_CODES:
            return EvidenceError(
                f"KMS key {key} does not exist or is not visible in this account/region ({code}: {detail})",
                hint="use the key ARN (it fixes account and region); " + CREATE_KEY_HINT,
            )
        if code in _STATE_CODES:
            return EvidenceError(
                f"KMS key {key} cannot {operation} in its current state ({code}: {detail})",
                hint="enable the key (`aws kms enable-key`) or cancel its pending deletion "
                "(`aws kms cancel-key-deletion`)",
            )
        if code in _WRONG_KIND_CODES:
            return EvidenceError(
                f"KMS key {key} is not an asymmetric signing key ({code}: {detail})",
                hint=CREATE_KEY_HINT,
            )
        return EvidenceError(
            f"KMS {operation} for key {key} failed ({code}: {detail})",
            hint=f"the caller needs {action} on the key",
        )

    def _check_key(self, response: Mapping[str, Any]) -> None:
        usage = response.get("KeyUsage")
        spec = response.get("KeySpec") or response.get("CustomerMasterKeySpec")
        algorithms = response.get("SigningAlgorithms") or []
        if usage != "SIGN_VERIFY":
            raise EvidenceError(
                f"KMS key {self.key_id} has KeyUsage {usage or '(not reported)'} ({spec or 'unknown spec'}); "
                "evidence needs an ECC_NIST_P256 SIGN_VERIFY key",
                hint=CREATE_KEY_HINT,
            )
        if SIGNING_ALGORITHM not in algorithms:
            raise EvidenceError(
                f"KMS key {self.key_id} ({spec}) does not offer {SIGNING_ALGORITHM} "
                f"(it offers {', '.join(algorithms) or 'none'})",
                hint=CREATE_KEY_HINT,
            )


def export_public_key(signer: KmsSigner, path: Path | str) -> Path:
    """Write the signer's public key as PEM (mode 0644) for auditors; return the path.

    Overwriting is fine: the content is determined by the key, and the keyid
    printed next to it lets anyone check which key it is.
    """
    path = Path(path)
    data = signer.public_key_pem().encode("ascii")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o644)
    except OSError as exc:
        raise EvidenceError(f"cannot write the public key of KMS key {signer.key_id} to {path}: {exc}") from exc
    return path
