"""PostgreSQL server binaries and throwaway clusters on this machine.

Shared by the local PostgreSQL backend, ``drill demo`` and the tests. A
cluster here is a data directory plus a server process started with
``pg_ctl`` in its own session (so Ctrl-C in the terminal reaches the runner,
which tears down in order, not the server). PostgreSQL refuses to run as
root, so when we are root the server runs as an unprivileged user
(``postgres`` when it exists, else ``nobody``) and we say so.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drills.clock import SystemClock
from drills.errors import InfrastructureError, PreflightError
from drills.osutil import (
    ProcessIdentity,
    RunAs,
    cmdline,
    identity_of,
    names_path,
    private_dir,
    private_log,
    process_alive,
    unprivileged_user,
)
from drills.wait import every, until

__all__ = [
    "PgBinaries",
    "PgCluster",
    "find_pg_binaries",
    "log_errors",
    "read_log",
    "run_as_for_server",
]

INSTALL_HINT = "install the PostgreSQL server: `sudo apt-get install postgresql` (Debian/Ubuntu)"


def run_as_for_server() -> RunAs | None:
    """PostgreSQL refuses to run as root: ``postgres`` when it exists, else ``nobody``."""
    return unprivileged_user("postgres", "nobody")


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    major: int

    def tool(self, name: str) -> str:
        return str(self.bindir / name)


def _major_of(bindir: Path) -> int | None:
    exe = bindir / "postgres"
    if not exe.exists():
        return None
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def _candidate_bindirs() -> list[Path]:
    dirs: list[Path] = []
    which = shutil.which("postgres") or shutil.which("initdb")
    if which:
        dirs.append(Path(os.path.realpath(which)).parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            dirs.append(Path(out.stdout.strip()))
    dirs.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def find_pg_binaries(major: int | None = None) -> PgBinaries:
    """Server binaries from PATH, ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``.

    With ``major``, only binaries of that major version qualify: a base
    backup can only be started by the major version that wrote it.
    """
    found: list[PgBinaries] = []
    for d in _candidate_bindirs():
        m = _major_of(d)
        if m is not None and (d / "pg_ctl").exists():
            found.append(PgBinaries(d, m))
    if major is not None:
        for b in found:
            if b.major == major:
                return b
        have = ", ".join(f"{b.major} ({b.bindir})" for b in found) or "none"
        raise PreflightError(
            f"the backup needs PostgreSQL {major} server binaries; found: {have}",
            hint=f"install them: `sudo apt-get install postgresql-{major}`",
        )
    if not found:
        raise PreflightError("PostgreSQL server binaries (postgres, pg_ctl) not found", hint=INSTALL_HINT)
    return max(found, key=lambda b: b.major)


@dataclass
class PgCluster:
    """One data directory and the server that runs on it."""

    bin: PgBinaries
    datadir: Path
    socket_dir: Path
    port: int
    run_as: RunAs | None
    logfile: Path
    started_pid: int | None = None
    on_started: Callable[[ProcessIdentity], None] | None = field(default=None, repr=False)
    _reported_pid: int | None = field(default=None, repr=False)

    def _run(self, args: list[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}
        try:
            return subprocess.run(  # type: ignore[call-overload, no-any-return]
                args, capture_output=True, text=True, timeout=timeout, check=check, cwd="/", **kwargs
            )
        except subprocess.CalledProcessError as exc:
            raise InfrastructureError(
                f"{Path(args[0]).name} failed (exit {exc.returncode}): {(exc.stderr or exc.stdout).strip()[-800:]}"
            ) from None
        except subprocess.TimeoutExpired:
            raise InfrastructureError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s") from None

    def initdb(self, superuser: str = "postgres", extra: list[str] | None = None) -> None:
        private_dir(self.datadir, self.run_as)
        self._run(
            [
                self.bin.tool("initdb"),
                "-D",
                str(self.datadir),
                "-U",
                superuser,
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
            + (extra or []),
            timeout=300,
        )

    def start(self, *, wait: bool, timeout: float = 60, options: dict[str, str] | None = None) -> None:
        """Start the server in its own session; with ``wait=False`` return once the process exists.

        As soon as the postmaster exists its identity (pid, start time,
        owner) goes to ``on_started``, while ``pg_ctl`` may still be waiting
        for it to accept connections: a runner killed from then on leaves a
        server ``drill teardown`` can prove is the one this run started.
        """
        private_dir(self.socket_dir, self.run_as)
        private_log(self.logfile, self.run_as)
        opts = {"port": str(self.port), "unix_socket_directories": str(self.socket_dir), **(options or {})}
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        args = [self.bin.tool("pg_ctl"), "start", "-D", str(self.datadir), "-l", str(self.logfile), "-o", o, "-s"]
        args += ["-w", "-t", str(int(timeout))] if wait else ["-W"]
        kwargs: dict[str, object] = {"start_new_session": True}
        if self.run_as is not None:
            kwargs.update(user=self.run_as.uid, group=self.run_as.gid, extra_groups=[])
        proc = subprocess.Popen(  # type: ignore[call-overload]
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", **kwargs
        )

        def exited() -> bool:
            self._report_started()
            return proc.poll() is not None

        if not until(SystemClock(), timeout + 10, exited, "pg_ctl start", policy=every(0.005)):
            proc.kill()
            proc.wait()
            raise InfrastructureError(f"pg_ctl start did not finish within {timeout + 10:.0f}s")
        _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise InfrastructureError(
                f"pg_ctl start failed (exit {proc.returncode}): {stderr.strip()[-400:]}; log: {self.log_tail()}"
            )
        if not wait:
            self._await_pid(timeout)
        self._report_started()

    def _report_started(self) -> None:
        """Hand the postmaster's identity to ``on_started`` once per pid (the server may be restarted)."""
        pid = self.pid()
        if pid is None or pid == self._reported_pid:
            return
        ident = identity_of(pid)
        if ident is None or not names_path(cmdline(pid)[1:], self.datadir):
            return  # not (yet) the postmaster of this data directory
        self.started_pid = pid
        self._reported_pid = pid
        if self.on_started is not None:
            self.on_started(ident)

    def _await_pid(self, timeout: float) -> None:
        """pg_ctl -W returns before the postmaster writes its pid file; wait for it (or for its death)."""

        def started() -> bool:
            if self.pid() is not None:
                return True
            log = self.log_tail(50)
            if "FATAL" in log or "PANIC" in log or "database system is shut down" in log:
                raise InfrastructureError(f"the server did not start: {self.log_tail()}")
            return False

        if not until(SystemClock(), min(timeout, 30.0), started, "postmaster.pid", policy=every(0.005)):
            raise InfrastructureError(f"the server did not start: {self.log_tail()}")
        self.started_pid = self.pid()

    def pid(self) -> int | None:
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid() or self.started_pid
        return pid is not None and process_alive(pid)

    def log_tail(self, n: int = 12) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def conninfo(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user}"

    def stop(self, timeout: float = 30) -> bool:
        """Fast shutdown, then immediate, then SIGKILL; True once the process is confirmed gone."""
        pid = self.pid()
        if pid is None or not process_alive(pid):
            return True
        for mode in ("fast", "immediate"):
            if self.datadir.exists():
                self._run(
                    [
                        self.bin.tool("pg_ctl"),
                        "stop",
                        "-D",
                        str(self.datadir),
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(int(timeout)),
                    ],
                    check=False,
                    timeout=timeout + 10,
                )
            if not process_alive(pid):
                return True
        if names_path(cmdline(pid)[1:], self.datadir):  # still our postmaster, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not process_alive(pid)


# ----------------------------------------------------------------------------- reading its log

LOG_LEVELS = re.compile(r"\b(FATAL|PANIC|ERROR):\s+(.*)")


def read_log(path: Path) -> str:
    """A server log's text; empty when it cannot be read (a missing log is no cause of its own)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# our own readiness polling makes the server log these while it starts: noise, not causes
POLLING_NOISE = (
    "the database system is starting up",
    "not accepting connections",
    "the database system is shutting down",
)
WAL_STOP = re.compile(r"LOG:\s+((?:invalid|incorrect|unexpected|contrecord)[^\n]* at [0-9A-F]+/[0-9A-F]+[^\n]*)")


def log_errors(path: Path, most: int = 3) -> str:
    """The server log's causes: FATAL/PANIC/ERROR lines and where WAL stopped being readable, never the whole tail."""
    text = read_log(path)
    found = [
        f"{m.group(1)}: {m.group(2).strip()}"
        for m in LOG_LEVELS.finditer(text)
        if not any(n in m.group(2) for n in POLLING_NOISE)
    ]
    found += [f"LOG: {m.group(1).strip()}" for m in WAL_STOP.finditer(text)][-1:]
    return " | ".join(found[-most:])
