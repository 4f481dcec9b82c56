"""The operating-system helpers every engine shares: process identity, accounts, private files, ports.

Who a process is, proven from /proc before teardown signals it.

A pid alone proves nothing: after a crash or a reboot the number may belong
to anyone, and a journal (or a ``postmaster.pid``) can name any number. So a
server's identity is journaled right after it starts: pid, start time (clock
ticks since boot, field 22 of ``/proc/PID/stat``), the boot id and the owner.
Teardown signals a pid only when the live process still has that start time
on that boot, runs as the expected user and names the run's data directory
on its command line; the signal goes through a pidfd opened *before* that
check, so the process checked is the process signalled even if the pid is
reused a microsecond later. Linux only, like the local backends.

The account helpers exist because servers refuse to run as root (PostgreSQL) or must not
(a restored production MariaDB): when we are root, a server runs as an unprivileged user and
every directory and log it needs is handed to that user, private (0700/0600) to everyone else.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from drills.clock import SystemClock
from drills.errors import InputError, PreflightError
from drills.wait import every, until

__all__ = [
    "ProcessIdentity",
    "RunAs",
    "atomic_write",
    "boot_id",
    "check_scratch_space",
    "chown_tree",
    "cmdline",
    "ensure_reachable",
    "first_copy_error",
    "free_port",
    "identity_of",
    "names_path",
    "open_private_log",
    "os_user",
    "pids_naming",
    "pids_using",
    "private_dir",
    "private_log",
    "process_alive",
    "readable_by",
    "signal_if",
    "start_wall_time",
    "stop_proven",
    "uid_of",
    "unprivileged_user",
    "unreachable_ancestor",
    "unreadable_reason",
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
        if until(SystemClock(), wait_s, lambda: _gone(ident), f"pid {ident.pid} gone", policy=every(0.02)):
            return True
    return _gone(ident)


# ----------------------------------------------------------------------------- accounts, files, ports


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a server runs as when we are root."""

    name: str
    uid: int
    gid: int


def unprivileged_user(*names: str) -> RunAs | None:
    """The first of ``names`` that exists, when we are root; None when we are not (servers run as us)."""
    if os.geteuid() != 0:
        return None
    for name in names:
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return RunAs(name, pw.pw_uid, pw.pw_gid)
    raise PreflightError(
        "running as root and no unprivileged user to run the server as", hint=f"create the user `{names[0]}`"
    )


def free_port() -> int:
    """A loopback port nobody listens on right now (the socket file name uses it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone once reaped
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def chown_tree(path: Path, run_as: RunAs | None) -> None:
    if run_as is None:
        return
    os.chown(path, run_as.uid, run_as.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, name), run_as.uid, run_as.gid)


def ensure_reachable(path: Path, run_as: RunAs | None) -> None:
    """Refuse early when the server's user cannot reach a directory (e.g. one under a 0700 home)."""
    if run_as is None:
        return
    probe = subprocess.run(
        ["test", "-x", str(path)], user=run_as.uid, group=run_as.gid, extra_groups=[], check=False, cwd="/"
    )
    if probe.returncode != 0:
        raise InputError(
            f"{path} is not reachable by the user {run_as.name!r} the server runs as (a parent directory is private)",
            hint="choose a directory under /tmp, or make its parents traversable (chmod o+x)",
        )


def private_log(path: Path, run_as: RunAs | None) -> Path:
    """A server log file, 0600 whatever the umask, owned by the server's user (who appends to it).

    Server logs quote SQL and connection details of a production copy:
    nobody but the server's user (and root) reads them.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if run_as is not None:
            os.fchown(fd, run_as.uid, run_as.gid)
    finally:
        os.close(fd)
    return path


def private_dir(path: Path, run_as: RunAs | None) -> Path:
    """A 0700 directory owned by the server's user."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    chown_tree(path, run_as)
    return path


def os_user() -> str:
    """The OS account of this process: the name MariaDB's unix_socket plugin authenticates."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return getpass.getuser()


def unreachable_ancestor(path: Path, run_as: RunAs | None) -> Path | None:
    """The first existing ancestor of ``path`` the server's user cannot traverse, if any.

    Checked before anything is created: a server that cannot reach its own
    datadir fails with an obscure log line, and we must not loosen the
    permissions of directories we do not own.
    """
    if run_as is None:
        return None
    p = path.absolute()
    for d in [*reversed(p.parents), p]:
        try:
            st = d.stat()
        except FileNotFoundError:
            break  # created by us later, with 0755
        if st.st_uid == run_as.uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid == run_as.gid:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return d
    return None


def pids_using(root: Path) -> list[int]:
    """Live processes whose arguments name a path inside ``root`` (server, client, mariadb-backup).

    This is how teardown finds what a SIGKILLed runner left behind, even a
    server that had not written its pid file yet: every process we start
    gets its paths under the run's directory on its command line.
    """
    prefix = str(root.absolute()).rstrip("/") + "/"
    me = {os.getpid(), os.getppid()}
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in me:
            continue
        pid = int(entry.name)
        args = cmdline(pid)
        if any(prefix in a or a.rstrip("/") == prefix.rstrip("/") for a in args[1:]) and process_alive(pid):
            found.append(pid)
    return sorted(found)


def uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def open_private_log(path: Path, mode: str = "wb") -> BinaryIO:
    """A log file of the runner's, 0600 whatever the umask (``mode`` "wb" truncates, "ab" appends)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_APPEND if mode.startswith("a") else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab" if mode.startswith("a") else "wb")


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a reader, or a crash, sees the old file or the whole new one.

    A temp file in the same directory (same filesystem, so the rename is atomic), written and
    fsync'd, given ``mode`` (mkstemp creates 0600), renamed over ``path``, then the directory
    fsync'd so the rename itself survives a power cut. The temp file is removed on any failure.
    Raises OSError: callers say what could not be written.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory; the rename is still atomic
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# ----------------------------------------------------------------------------- who can read a file


def readable_by(st_mode: int, st_uid: int, st_gid: int, uid: int, gids: Iterable[int]) -> bool:
    """Whether a user may open a file for reading, from its mode bits (root reads anything)."""
    if uid == 0:
        return True
    if st_uid == uid:
        return bool(st_mode & stat.S_IRUSR)
    if st_gid in set(gids):
        return bool(st_mode & stat.S_IRGRP)
    return bool(st_mode & stat.S_IROTH)


def _traversable_by(st: os.stat_result, uid: int, gids: Sequence[int]) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def unreadable_reason(path: Path, reader: tuple[str, int, Sequence[int]] | None) -> str | None:
    """Why ``reader`` (name, uid, gids; None: this process) cannot read ``path``, or None when it can.

    From mode bits and every directory on the way (ACLs are not read: a file they open is
    reported unreadable only if the mode bits refuse it too, and the reader itself still fails
    loudly later).
    """
    if reader is None:
        return None if os.access(path, os.R_OK) else f"not readable by this process (uid {os.geteuid()})"
    who, uid, gids = reader
    p = path.absolute()
    for d in reversed(p.parents):
        try:
            st = d.stat()
        except OSError as exc:
            return f"cannot stat {d}: {exc.strerror}"
        if not _traversable_by(st, uid, gids):
            return f"not readable by {who}: directory {d} (mode {stat.S_IMODE(st.st_mode):04o}) is not traversable"
    try:
        st = p.stat()
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if not readable_by(st.st_mode, st.st_uid, st.st_gid, uid, gids):
        return f"not readable by {who} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid} gid {st.st_gid})"
    return None


def check_scratch_space(scratch: Path, needed: int, what: str) -> None:
    """Refuse up front when the scratch filesystem cannot hold a restore of ``needed`` bytes of ``what``
    (plus 10 % and 128 MiB for the server): a restore that fills the disk halfway fails late and obscurely."""
    try:
        free = shutil.disk_usage(scratch).free
    except OSError as exc:
        raise PreflightError(f"scratch {scratch}: {exc.strerror}", hint="set --scratch DIR") from None
    want = int(needed * 1.1) + (128 << 20)
    if free < want:
        raise PreflightError(
            f"scratch {scratch} has {free / 2**20:.0f} MiB free; this restore needs about {want / 2**20:.0f} MiB "
            f"({needed / 2**20:.0f} MiB of {what}, plus 10 % and 128 MiB)",
            hint="free space there, or point --scratch / RESTORE_DRILLS_SCRATCH at a larger filesystem",
        )


def first_copy_error(exc: shutil.Error) -> str:
    """A failed ``copytree`` in one line: the first (src, dst, why) and how many more, never all of them."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) and exc.args[0] else [("", "", str(exc))]
    src, _dst, why = errors[0] if isinstance(errors[0], tuple) and len(errors[0]) == 3 else ("", "", errors[0])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{src}: {why}{more}" if src else f"{why}{more}"
