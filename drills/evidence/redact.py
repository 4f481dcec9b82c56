"""Keep secrets out of evidence.

Evidence is signed and retained for years (HIPAA: six), and handed to
auditors: a database password that slips into it cannot be taken back without
breaking the signature. So the writer refuses to sign anything that contains a
known secret (:func:`assert_no_secrets`), and every string of the record
(error messages from drivers, command lines) goes through :func:`scrub_record`
first: the same scrubber as the logs (:mod:`drills.scrub`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from drills.errors import EvidenceError
from drills.scrub import MASK, scrub, scrub_tree

__all__ = ["MASK", "assert_no_secrets", "scrub_dsn", "scrub_record"]

# One scrubber for logs and evidence: drills.scrub (kept free of crypto imports, so logging stays light).
scrub_dsn = scrub
scrub_record = scrub_tree


def _strings(obj: object, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(obj, str):
        yield path, obj
    elif isinstance(obj, bytes):
        yield path, obj.decode("utf-8", errors="replace")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield f"{path} (key)", str(key)
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple | set | frozenset):
        for index, value in enumerate(obj):
            yield from _strings(value, f"{path}[{index}]")
    elif obj is not None:
        yield path, str(obj)


def assert_no_secrets(obj: object, secrets: list[str]) -> None:
    """Raise :class:`EvidenceError` if any secret appears anywhere in ``obj``.

    Looks in every string, key and scalar (numbers too, as text), both for the
    secret itself and for its JSON-escaped spelling (a driver error may embed
    a JSON document as a string). The message names where, never the secret.
    Empty secrets are ignored: they match everything and protect nothing.
    """
    wanted = [
        (index, {secret, json.dumps(secret, ensure_ascii=False)[1:-1], json.dumps(secret)[1:-1]})
        for index, secret in enumerate(secrets, 1)
        if secret
    ]
    for path, text in _strings(obj, "$"):
        for index, spellings in wanted:
            if any(spelling in text for spelling in spellings):
                raise EvidenceError(
                    f"secret #{index} of {len(secrets)} appears in the evidence at {path}; refusing to write it",
                    hint="pass the value through drills.evidence.scrub_dsn or leave it out of the record",
                )
