"""RFC 8785 (JCS) canonical JSON for evidence payloads.

The signature covers bytes, so the bytes must be reproducible by anyone who
re-serializes the statement: JCS fixes key order, whitespace and string
escaping. JCS formats numbers as IEEE-754 doubles, which is where
reproducibility breaks (``0.1 + 0.2``, integers above 2**53), so evidence keeps
integers only (durations in milliseconds) and this module *rejects* floats
rather than silently rounding them: a caller passing seconds as a float is a
bug worth seeing, and the error names the path of the offending value.
"""

from __future__ import annotations

from typing import Any, cast

import rfc8785

from drills.errors import EvidenceError

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "check_json_value"]

#: Largest integer JCS can represent exactly (a double's 53-bit mantissa).
MAX_SAFE_INTEGER = 2**53 - 1


def _child(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    return f"{path}.{text}" if text.isidentifier() else f"{path}[{text!r}]"


def check_json_value(obj: object, path: str = "$") -> None:
    """Raise :class:`EvidenceError` naming the first value JCS cannot carry exactly.

    Allowed: ``None``, ``bool``, ``str``, integers within +/- (2**53 - 1), lists,
    tuples and dicts with string keys. Everything else (floats, bytes,
    datetimes, sets...) must be converted by the caller into one of these, on
    purpose, before it is signed.
    """
    if obj is None or isinstance(obj, bool | str):
        return
    if isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INTEGER:
            raise EvidenceError(
                f"evidence value at {path} is the integer {obj}, outside the exact JSON range +/-(2**53 - 1)",
                hint="store it as a string",
            )
        return
    if isinstance(obj, float):
        raise EvidenceError(
            f"evidence value at {path} is a float ({obj!r}); evidence keeps integers only",
            hint="pass durations as integer milliseconds, ratios as integer per-mille or as strings",
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise EvidenceError(f"evidence object at {path} has a non-string key {key!r}")
            check_json_value(value, _child(path, key))
        return
    if isinstance(obj, list | tuple):
        for index, value in enumerate(obj):
            check_json_value(value, _child(path, index))
        return
    raise EvidenceError(
        f"evidence value at {path} has type {type(obj).__name__}, which JSON cannot carry",
        hint="convert it to a string or integer before building evidence (timestamps: drills.clock.iso)",
    )


def canonical_json(obj: object) -> bytes:
    """Serialize ``obj`` as RFC 8785 canonical JSON (UTF-8 bytes).

    Raises :class:`EvidenceError` naming the path of a float, an out-of-range
    integer or a non-JSON value instead of producing bytes nobody can
    reproduce.
    """
    check_json_value(obj)
    try:
        data: bytes = rfc8785.dumps(cast(Any, obj))  # check_json_value proved the shape
    except rfc8785.CanonicalizationError as exc:  # defensive: check_json_value should catch these first
        raise EvidenceError(f"evidence cannot be canonicalized: {exc}") from exc
    return data
