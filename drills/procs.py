"""Who a process is, proven from /proc before teardown signals it.

A pid alone proves nothing: after a crash or a reboot the number may belong
to anyone, and a journal (or a ``postmaster.pid``) can name any number. So a
server's identity is journaled right after it starts: pid, start time (clock
ticks since boot, field 22 of ``/proc/PID/stat``), the boot id and the owner.
Teardown signals a pid only when the live process still has that start time
on that boot, runs as the expected user and names the run's data directory
on its command line; the signal goes through a pidfd opened *before* that
check, so the process checked is the process signalled even if the pid is
reused a microsecond later. Linux only, like the local backends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessIdentity",
    "boot_id",
    "cmdline",
    "identity_of",
    "names_path",
    "pids_naming",
    "signal_if",
    "start_wall_time",
    "stop_proven",
    "user_name",
    "why_not_ours",
]


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it was when it started: the journal keeps this, teardown compares it."""

    pid: int
    start_ticks: int  # /proc/PID/stat field 22: when it started, in clock ticks since boot
    boot_id: str
    uid: int  # effective uid

    def to_attrs(self) -> dict[str, Any]:
        return {"pid": self.pid, "pid_start_ticks": self.start_ticks, "boot_id": self.boot_id, "pid_uid": self.uid}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> ProcessIdentity | None:
        """The identity journaled with a resource, or None when its start was never journaled."""
        try:
            return cls(int(attrs["pid"]), int(attrs["pid_start_ticks"]), str(attrs["boot_id"]), int(attrs["pid_uid"]))
        except (KeyError, TypeError, ValueError):
            return None


def _reap_if_child(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def identity_of(pid: int) -> ProcessIdentity | None:
    """The live process ``pid`` (None when it is gone or a zombie)."""
    _reap_if_child(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    uid = next((int(line.split()[2]) for line in status.splitlines() if line.startswith("Uid:")), -1)
    return ProcessIdentity(pid, int(fields[19]), boot_id(), uid)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def names_path(args: Iterable[str], path: Path) -> bool:
    """Does a command line name ``path`` exactly (``PATH``, ``--opt=PATH``, ``-DPATH``)?"""
    p = str(path).rstrip("/")
    for arg in args:
        a = arg.rstrip("/")
        if a == p or a.endswith("=" + p) or (a.startswith("-D") and a[2:] == p):
            return True
    return False


def pids_naming(path: Path, *, inside: bool = False) -> list[int]:
    """Live processes whose arguments name ``path`` (or, with ``inside``, anything under it)."""
    prefix = str(path).rstrip("/") + "/"
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        args = cmdline(pid)[1:]
        hit = names_path(args, path) or (inside and any(prefix in a for a in args))
        if hit and identity_of(pid) is not None:
            found.append(pid)
    return sorted(found)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def why_not_ours(pid: int, *, expected: ProcessIdentity | None, uid: int, datadir: Path) -> str | None:
    """None when ``pid`` is the server journaled in ``expected``; else why it is not (or "gone")."""
    cur = identity_of(pid)
    if cur is None:
        return "gone"
    args = cmdline(pid)
    if cur.uid != uid:
        return f"it runs as {user_name(cur.uid)}, not as the server user {user_name(uid)}"
    if not names_path(args[1:], datadir):
        shown = " ".join(args)[:80] or "?"
        return f"its command line ({shown}) does not name {datadir}"
    if expected is None:
        return "its start was never journaled (the runner died before recording it)"
    if expected.pid != pid or (expected.start_ticks, expected.boot_id) != (cur.start_ticks, cur.boot_id):
        return "its start time is not the one journaled at launch (another process with a reused pid)"
    return None


def start_wall_time(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (about 1 s precision: btime is whole seconds)."""
    ident = identity_of(pid)
    if ident is None:
        return None
    try:
        btime = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    return btime + ident.start_ticks / os.sysconf("SC_CLK_TCK")


def signal_if(pid: int, sig: int, still_ours: Callable[[], bool]) -> bool:
    """Send ``sig`` to ``pid`` only if ``still_ours()`` holds, through a pidfd opened before the check."""
    fd: int | None = None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:
        fd = None  # no pidfd (old kernel): the start-time check still rules out a reused pid
    try:
        if not still_ours():
            return False
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd is not None:
            os.close(fd)


def _gone(ident: ProcessIdentity) -> bool:
    now = identity_of(ident.pid)
    return now is None or now.start_ticks != ident.start_ticks


def stop_proven(ident: ProcessIdentity, still_ours: Callable[[], bool], steps: Sequence[tuple[int, float]]) -> bool:
    """Signal a proven process step by step (signal, seconds to wait) until it is gone; True once gone."""
    for sig, wait_s in steps:
        if _gone(ident):
            return True
        if not signal_if(ident.pid, sig, still_ours):
            return _gone(ident)
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            if _gone(ident):
                return True
            time.sleep(0.02)
    return _gone(ident)
