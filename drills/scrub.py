"""The one secret scrubber: every log line and every evidence record pass through :func:`scrub`.

Passwords reach text through connection strings: a driver error quoting a DSN,
a command line, a URL someone logged. Two spellings are masked:

* URLs, ``scheme://user:password@host...``: the password runs to the *last*
  ``@`` before whitespace. Unencoded ``@`` (and ``:``, ``/``, ``?``, quotes)
  in passwords is common, and masking part of the host is a better failure
  than leaking the tail of a password (``app:p@ss@db`` once became
  ``app:***@ss@db`` in the logs).
* ``key=value`` and ``key: value`` where the key names a secret (``password``,
  ``PGPASSWORD``, ``MYSQL_PWD``, ``client_secret``, ``auth_token``...): a
  quoted value to its closing quote (backslash escapes honoured), then on to
  the next whitespace; an unquoted value to the next whitespace, or inside a
  URL query (after ``?`` or ``&``) to the next ``&``.

Over-masking is accepted everywhere: a mask can hide a host, never show a
secret. A password written bare, with nothing around it that says so, cannot
be recognised; for those the evidence writer also refuses any known secret
(:func:`drills.evidence.redact.assert_no_secrets`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "is_secret_key", "scrub", "scrub_tree"]

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s'\"]*:)(?P<pw>\S*)@")
_CREDENTIAL_NAMES = r"[\w-]*(?:password|passwd|pwd|secret|token)"
_KEY = re.compile(r"(?<![\w-])" + _CREDENTIAL_NAMES + r"[\"']?\s*[=:]\s*", re.IGNORECASE)
_SECRET_KEY = re.compile(_CREDENTIAL_NAMES, re.IGNORECASE)


def is_secret_key(name: str) -> bool:
    """A field named like a secret (``password``, ``db_password``, ``token``...): its value is masked whole."""
    return _SECRET_KEY.fullmatch(name) is not None


def _to_space(text: str, pos: int) -> int:
    while pos < len(text) and not text[pos].isspace():
        pos += 1
    return pos


def _value_end(text: str, start: int, in_query: bool) -> int:
    """Where the value starting at ``start`` ends (exclusive)."""
    if start >= len(text) or text[start].isspace():
        return start
    quote = text[start]
    if quote in "'\"":
        pos = start + 1
        while pos < len(text) and text[pos] != quote:
            pos += 2 if text[pos] == "\\" else 1
        return _to_space(text, pos + 1)  # `'it''s'`, `"x",`: on to the next whitespace
    if in_query:
        pos = start
        while pos < len(text) and text[pos] not in "&#" and not text[pos].isspace():
            pos += 1
        return pos
    return _to_space(text, start)


def _mask_values(text: str) -> str:
    out: list[str] = []
    done = 0
    pos = 0
    while (m := _KEY.search(text, pos)) is not None:
        in_query = m.start() > 0 and text[m.start() - 1] in "?&"
        end = min(_value_end(text, m.end(), in_query), len(text))
        if end > m.end():
            out += [text[done : m.end()], MASK]
            done = end
        pos = max(end, m.end())
    out.append(text[done:])
    return "".join(out)


def scrub(text: str) -> str:
    """``text`` with every password it spells out masked (see the module docstring).

    ``postgresql://app:p@ss@db/shop`` → ``postgresql://app:***@db/shop``;
    ``host=db password='x y' user=u`` → ``host=db password=*** user=u``.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@" if m["pw"] else m[0], text)
    return _mask_values(text)


def _field(name: object, value: Any) -> Any:
    secret_valued = isinstance(value, str | bytes | int | float) and not isinstance(value, bool) and value != ""
    if isinstance(name, str) and is_secret_key(name) and secret_valued:
        return MASK
    return scrub_tree(value)


def scrub_tree(obj: Any) -> Any:
    """A copy of a JSON-like value with every string scrubbed and every secret-named field masked."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: _field(k, v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(scrub_tree(v) for v in obj)
    return obj
