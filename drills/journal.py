"""The durable run journal: one JSON line per event, fsync'd before acting.

The journal is the truth of a run. The machine appends a line *before* each
action (entering a state, creating a resource, tearing one down), so after a
crash or a SIGKILL ``drill teardown RUN_ID`` knows every resource that may
exist, and ``drill runs`` knows where each run stopped. Nothing secret is
ever written here: resources carry identifiers and paths, not credentials.

Because teardown acts on what the journal says, the journal is trusted only
as far as nobody else could have written it: the state home and every run
directory are 0700 and each journal 0600 (whatever the umask), and a home,
run directory or journal that another user owns or could write, or a home
reached through a directory others can rename entries in, is refused before
anything is read (:class:`~drills.errors.PreflightError`, exit 2: the
environment must be fixed first, and nothing was started or touched).

A write that fails (a full disk) is truncated back to the last complete
line, so it never glues itself to the next event; a torn last line left by a
SIGKILL is cut off when the journal is opened again. On the teardown path
the journal is *best effort*: teardown works from resources held in memory
and a failed append is collected in :attr:`Journal.errors` for the evidence.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from drills.clock import Clock, iso
from drills.errors import InfrastructureError, InputError, PreflightError
from drills.osutil import cmdline, process_alive
from drills.resources import Resource

__all__ = [
    "Journal",
    "RunSummary",
    "list_runs",
    "new_run_id",
    "read_events",
    "secure_home",
    "state_home",
    "summarize",
]

log = structlog.get_logger("drills.journal")

DIR_MODE = 0o700
FILE_MODE = 0o600
JOURNAL_NAME = "journal.jsonl"
_MAX_LINKS = 40


def state_home() -> Path:
    """Where runs are journaled: $RESTORE_DRILLS_HOME, else $XDG_STATE_HOME/restore-drills."""
    env = os.environ.get("RESTORE_DRILLS_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "restore-drills"


def new_run_id(now: datetime) -> str:
    """Sortable by time, unique without coordination: 20261126T231500Z-1a2b3c."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# ------------------------------------------------------------------ trust


def _who(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _writers(mode: int) -> str:
    return " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)


def _check_private(path: Path, st: os.stat_result, what: str) -> None:
    """A home, run directory or journal: ours, and writable by nobody else."""
    me = os.geteuid()
    if st.st_uid != me:
        raise PreflightError(
            f"{path}: the {what} belongs to {_who(st.st_uid)}, not to you ({_who(me)}); "
            "its journals could tell teardown what to stop and remove",
            hint="use a state home you own: set RESTORE_DRILLS_HOME",
        )
    if st.st_mode & 0o022:
        raise PreflightError(
            f"{path}: the {what} is writable by {_writers(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o}); "
            "anyone could forge a journal that teardown would obey",
            hint=f"chmod go-w {path} (restore-drills keeps it 0700), or set RESTORE_DRILLS_HOME",
        )


def _check_ancestor(path: Path, st: os.stat_result) -> None:
    """A directory above the home: only root or we may rename what is in it (else sticky)."""
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise PreflightError(
            f"{path}: a directory above the state home belongs to {_who(st.st_uid)}, "
            "who could replace the home with one of their own",
            hint="put the state home under a directory owned by you or root (RESTORE_DRILLS_HOME)",
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PreflightError(
            f"{path}: a directory above the state home is writable by {_writers(st.st_mode)} without the sticky bit "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); anyone could replace the home with one of their own",
            hint="put the state home elsewhere (RESTORE_DRILLS_HOME), or `chmod +t` that directory",
        )


def _walk(path: Path, depth: int = 0, *, home: bool = True) -> bool:
    """Check every directory on the way to ``path``, following symlinks; False if ``path`` does not exist.

    The home itself is held to :func:`_check_private`, every directory above
    it (and above or at a symlink's target on the way) to
    :func:`_check_ancestor`. A directory that does not exist yet ends the
    walk: we will create it, 0700.
    """
    if depth > _MAX_LINKS:
        raise PreflightError(f"{path}: too many symbolic links on the way to the state home")
    parts = Path(os.path.abspath(path)).parts
    cur = Path(parts[0])
    _check_ancestor(cur, os.stat(cur))
    for i, name in enumerate(parts[1:], start=2):
        last = i == len(parts)
        nxt = cur / name
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            # the link lives in ``cur`` (checked); what it points to is checked the same way, recursively
            target = Path(os.readlink(nxt))
            if not _walk(target if target.is_absolute() else cur / target, depth + 1, home=home and last):
                raise PreflightError(f"{nxt}: a symbolic link to {target}, which does not exist")
            cur = Path(os.path.realpath(nxt))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise PreflightError(
                f"{nxt}: not a directory (on the way to the state home {path})",
                hint="point RESTORE_DRILLS_HOME at a directory you own",
            )
        if last and home:
            _check_private(nxt, st, "state home")
        else:
            _check_ancestor(nxt, st)
        cur = nxt
    return True


def _private_dir(path: Path, what: str, *, create: bool) -> bool:
    """``path`` (inside a checked home) is a real directory of ours, 0700; created when asked."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:  # a concurrent drill (a fleet's, or another process) made it first: check it
            return _private_dir(path, what, create=create)
        os.chmod(path, DIR_MODE)  # a umask may have taken bits away; never let it add or keep any
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise PreflightError(f"{path}: the {what} is not a directory (a symbolic link?)", hint=f"remove {path}")
    _check_private(path, st, what)
    if create and stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return True


def secure_home(home: Path | None = None, *, create: bool = True) -> Path:
    """The state home, checked (and created 0700 with missing parents): refuses one others could tamper with.

    Raises :class:`~drills.errors.PreflightError` (exit 2) naming the
    directory, what is wrong and what to do.
    """
    home = Path(os.path.abspath(home or state_home()))
    try:
        exists = _walk(home)
        if not exists and create:
            missing = [p for p in [*reversed(home.parents), home] if not os.path.lexists(p)]
            for p in missing:
                os.mkdir(p, DIR_MODE)
                os.chmod(p, DIR_MODE)
            _walk(home)
        elif exists and create:
            real = Path(os.path.realpath(home))
            if stat.S_IMODE(os.stat(real).st_mode) != DIR_MODE:
                os.chmod(real, DIR_MODE)
    except OSError as exc:
        raise PreflightError(
            f"{home}: cannot prepare the state home: {exc.strerror or exc}",
            hint="set RESTORE_DRILLS_HOME to a directory you can write",
        ) from None
    return home


def _open_journal(path: Path, *, create: bool) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PreflightError(f"{path}: the journal is not a regular file")
        _check_private(path, st, "journal")
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


# ------------------------------------------------------------------ the journal


class Journal:
    """Append-only JSON lines for one run, on a descriptor opened after the trust checks."""

    def __init__(self, path: Path, run_id: str, clock: Clock, fd: int) -> None:
        self.path = path
        self.run_id = run_id
        self._clock = clock
        self._fd: int | None = fd
        self.best_effort = False  # set for teardown: a failed append is collected, not raised
        self.errors: list[str] = []  # every append that failed, for the evidence
        self.repaired_bytes = self._repair()
        self._seq = self._count_lines()

    @classmethod
    def create(cls, run_id: str, clock: Clock, home: Path | None = None) -> Journal:
        h = secure_home(home)
        try:
            _private_dir(h / "runs", "runs directory", create=True)
            run_dir = h / "runs" / run_id
            _private_dir(run_dir, "run directory", create=True)
            path = run_dir / JOURNAL_NAME
            fd = _open_journal(path, create=True)
        except OSError as exc:
            raise PreflightError(
                f"{h}: cannot create the journal of run {run_id}: {exc.strerror or exc}",
                hint="set RESTORE_DRILLS_HOME to a directory you can write",
            ) from None
        return cls(path, run_id, clock, fd)

    @classmethod
    def reopen(cls, run_id: str, clock: Clock, home: Path | None = None) -> Journal:
        h = Path(os.path.abspath(home or state_home()))
        path = h / "runs" / run_id / JOURNAL_NAME
        no_run = InputError(f"no run {run_id!r} in {h / 'runs'}", hint="`drill runs` lists the runs")
        if "/" in run_id or run_id in ("", ".", ".."):
            raise no_run
        try:
            if not os.path.lexists(h):
                raise no_run
            secure_home(h, create=False)
            if not _private_dir(h / "runs", "runs directory", create=False):
                raise no_run
            if not _private_dir(path.parent, "run directory", create=False):
                raise no_run
            if not os.path.lexists(path):
                raise no_run
            fd = _open_journal(path, create=False)
        except OSError as exc:
            raise PreflightError(f"{path}: cannot open the journal: {exc.strerror or exc}") from None
        return cls(path, run_id, clock, fd)

    def _repair(self) -> int:
        """Cut a torn last line (a write killed half-way); returns how many bytes were dropped."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        data = os.pread(self._fd, size, 0)
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        os.ftruncate(self._fd, keep)
        os.fsync(self._fd)
        log.warning("journal_repaired", path=str(self.path), dropped_bytes=size - keep)
        return size - keep

    def _count_lines(self) -> int:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size, 0).count(b"\n") if size else 0

    def events(self) -> list[dict[str, Any]]:
        """The events, read through the descriptor that passed the trust checks."""
        if self._fd is None:
            return read_events(self.path)
        return _parse(os.pread(self._fd, os.fstat(self._fd).st_size, 0))

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError(9, "the journal is closed")
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError:
            # never leave half a line for the next event to be glued onto
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event and fsync it; on failure raise, or in best-effort mode record it and go on."""
        record = {"seq": self._seq + 1, "at": iso(self._clock.now()), "run_id": self.run_id, "event": event, **fields}
        data = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
        try:
            self._write(data)
        except OSError as exc:
            msg = f"{event}: {exc.strerror or exc}"
            self.errors.append(msg)
            log.error("journal_write_failed", path=str(self.path), failed_event=event, error=exc.strerror or str(exc))
            if self.best_effort:
                return record
            raise InfrastructureError(
                f"the journal {self.path} could not be written ({msg})",
                hint="free space where the journal lives (RESTORE_DRILLS_HOME); teardown still ran",
            ) from None
        self._seq += 1
        return record

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _parse_line(line: str) -> dict[str, Any] | None:
    try:
        ev = json.loads(line)
    except json.JSONDecodeError:
        # a torn line glued to a whole one (journals written before writes were truncated on failure)
        i = line.rfind('{"at": ')
        if i <= 0:
            return None
        try:
            ev = json.loads(line[i:])
        except json.JSONDecodeError:
            return None
    return ev if isinstance(ev, dict) else None


def _parse(data: bytes) -> list[dict[str, Any]]:
    events = []
    for raw in data.split(b"\n"):
        if raw.strip():
            ev = _parse_line(raw.decode("utf-8", errors="replace"))
            if ev is not None:
                events.append(ev)
    return events


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete lines; a torn last line (killed mid-write) or a damaged line is skipped."""
    return _parse(path.read_bytes())


@dataclass
class RunSummary:
    run_id: str
    runbook: str = ""
    started_at: str = ""
    last_state: str = ""
    status: str = "unknown"  # running | finished | interrupted | crashed
    verdict: str | None = None
    pid: int | None = None
    evidence: str | None = None
    outstanding: list[Resource] = field(default_factory=list)
    kept: bool = False  # resources deliberately left for inspection (drill run --keep)


def _alive(pid: int | None) -> bool:
    """Whether the runner that wrote a journal still runs: alive, and (when /proc says) a Python/drill process,
    so a pid reused by an unrelated program after a crash does not make a dead run look running."""
    if pid is None or not process_alive(pid):
        return False
    args = "\0".join(cmdline(pid))
    return not args or any(name in args for name in ("drill", "pytest", "python"))


def _fold(s: RunSummary, created: dict[str, Resource], ev: dict[str, Any]) -> None:
    kind = ev.get("event")
    if kind == "run_started":
        s.runbook = ev.get("runbook", {}).get("name", "")
        s.started_at = ev.get("at", "")
        s.pid = ev.get("pid")
        s.status = "running"
    elif kind == "state_entered":
        s.last_state = ev.get("state", "")
    elif kind == "resource_registered":  # registered again with more attrs (the server's pid): the last wins
        r = Resource.from_dict(ev["resource"])
        created[f"{r.backend}/{r.kind}/{r.id}"] = r
    elif kind == "resource_removed":
        r = Resource.from_dict(ev["resource"])
        created.pop(f"{r.backend}/{r.kind}/{r.id}", None)
    elif kind == "resource_kept":  # incident mode: still ours to remove, with `drill teardown` or the sweeper
        s.kept = True
    elif kind == "evidence_written":
        s.evidence = ev.get("path")
    elif kind == "run_finished":
        s.status = "interrupted" if ev.get("interrupted") else "finished"
        s.verdict = ev.get("verdict")


def summarize(run_id: str, events: list[dict[str, Any]]) -> RunSummary:
    """Fold a run's events into where it stands and what it may have left behind."""
    s = RunSummary(run_id=run_id)
    created: dict[str, Resource] = {}
    for ev in events:
        try:
            _fold(s, created, ev)
        except (KeyError, TypeError, AttributeError, ValueError):
            log.warning("journal_event_skipped", run_id=run_id, seq=ev.get("seq"), skipped=ev.get("event"))
    if s.status == "running" and not _alive(s.pid):
        s.status = "crashed"
    s.outstanding = list(created.values())
    return s


def _read_trusted(run_dir: Path) -> list[dict[str, Any]] | None:
    """The events of one run directory, if it and its journal pass the trust checks (read only)."""
    if not _private_dir(run_dir, "run directory", create=False):
        return None
    path = run_dir / JOURNAL_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PreflightError(f"{path}: the journal is not a regular file")
        _check_private(path, st, "journal")
        return _parse(os.pread(fd, st.st_size, 0))
    finally:
        os.close(fd)


def list_runs(home: Path | None = None) -> Iterator[RunSummary]:
    """Every run whose journal can be trusted; an untrusted home is refused, an untrusted run skipped."""
    h = Path(os.path.abspath(home or state_home()))
    if not os.path.lexists(h):
        return
    secure_home(h, create=False)
    runs = h / "runs"
    if not _private_dir(runs, "runs directory", create=False):
        return
    for d in sorted(runs.iterdir()):
        try:
            events = _read_trusted(d)
        except (PreflightError, OSError) as exc:
            log.warning("journal_untrusted", run_dir=str(d), reason=str(exc))
            continue
        if events is not None:
            yield summarize(d.name, events)
