"""The ``mariadb`` client the restore feeds SQL into: how its errors are classified and how a pipe into it ended.

A client error is the backup's content (a failed drill, :class:`~drills.errors.BackupDefect` or
:class:`~drills.errors.IncompleteRecovery`) unless it says the environment failed (connection lost,
out of memory, disk full): that one is :class:`~drills.errors.RestoreFailed`, worth a retry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Piped", "client_args", "client_error", "environment_failed", "last_lines"]

# client errors that say the environment failed, not the SQL the backup holds: connection lost,
# server gone, out of memory, disk full, too many connections; anything else is the backup's content
_ENVIRONMENT_ERRORS = frozenset({1021, 1037, 1038, 1040, 1041, 1114, 1135, 2002, 2003, 2006, 2013})
_ERROR_LINE = re.compile(r"^ERROR (\d+)(?: \(\w+\))? at line (\d+)", re.M)
_ENVIRONMENT_TEXT = re.compile(r"No space left on device|errno:? ?28\b|Cannot allocate memory|Out of memory", re.I)


def client_error(stderr: str) -> tuple[int | None, int | None, str]:
    """(error code, input line, the ERROR line) from the mariadb client's stderr."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ERROR")]
    last = lines[-1] if lines else stderr.strip()[-600:]
    m = _ERROR_LINE.search(last)
    return (int(m.group(1)), int(m.group(2)), last[:600]) if m else (None, None, last[:600])


def environment_failed(code: int | None, text: str) -> bool:
    return (code is not None and code in _ENVIRONMENT_ERRORS) or bool(_ENVIRONMENT_TEXT.search(text))


def last_lines(text: str, n: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-n:])[-600:]


@dataclass(frozen=True)
class Piped:
    """How ``reader | client`` ended."""

    reader_rc: int
    reader_err: str
    client_rc: int
    client_err: str
    timed_out: bool
    broken_pipe: bool


def client_args(tool: str, socket: Path, user: str, database: str | None) -> list[str]:
    """The ``mariadb`` client over the server's socket, as the replay and the dump load run it."""
    args = [
        tool,
        "--no-defaults",
        f"--socket={socket}",
        f"--user={user}",
        "--binary-mode",
        "--max-allowed-packet=1G",
        "--default-character-set=utf8mb4",
        "--batch",
    ]
    return [*args, database] if database else args
