"""MariaDB server binaries and throwaway servers on this machine.

Shared by the local MariaDB backend, ``drill demo --engine mariadb`` and the
tests. A server here is a data directory plus a ``mariadbd`` process started
directly (no ``mariadbd-safe``, which would restart it behind our back) in its
own session, so Ctrl-C in the terminal reaches the runner, which tears down in
order, not the server. When we are root the server runs as ``mysql`` (else
``nobody``): a restored production database must not run with root's rights.

Every server is started with ``--no-defaults`` so that no ``/etc/mysql``
option file can turn on networking, binary logging into a production
directory, replication or an event scheduler behind the drill's back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drills.clock import SystemClock
from drills.errors import InfrastructureError, PreflightError
from drills.osutil import (
    ProcessIdentity,
    RunAs,
    cmdline,
    identity_of,
    open_private_log,
    os_user,
    pids_using,
    private_dir,
    private_log,
    process_alive,
    unprivileged_user,
)
from drills.wait import every, until

__all__ = [
    "INSTALL_HINT",
    "MariaBinaries",
    "MariaServer",
    "find_maria_binaries",
    "innodb_args",
    "run_as_for_mariadb",
]

INSTALL_HINT = "install MariaDB: `sudo apt-get install mariadb-server mariadb-backup` (Debian/Ubuntu)"

# Unix socket paths are limited to 108 bytes (sun_path) including the NUL.
MAX_SOCKET_PATH = 107

_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin")

# tool -> names, newest first (MariaDB 10.5+ renamed the mysql* tools; the old names are symlinks)
_NAMES: dict[str, tuple[str, ...]] = {
    "mariadbd": ("mariadbd", "mysqld"),
    "install_db": ("mariadb-install-db", "mysql_install_db"),
    "client": ("mariadb", "mysql"),
    "admin": ("mariadb-admin", "mysqladmin"),
    "backup": ("mariadb-backup", "mariabackup"),
    "binlog": ("mariadb-binlog", "mysqlbinlog"),
    "dump": ("mariadb-dump", "mysqldump"),
}
_SERVER_TOOLS = ("mariadbd", "install_db", "client")


def _which(names: Sequence[str]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for d in _SEARCH_DIRS:
            p = Path(d) / name
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
    return None


@dataclass(frozen=True)
class MariaBinaries:
    """Absolute paths of the MariaDB tools a drill uses, and the server version."""

    tools: dict[str, str]
    version: str

    def tool(self, name: str) -> str:
        try:
            return self.tools[name]
        except KeyError:
            raise PreflightError(f"MariaDB tool {_NAMES[name][0]} not found", hint=INSTALL_HINT) from None


def find_maria_binaries(*, need: Sequence[str] = ()) -> MariaBinaries:
    """The server (``mariadbd``, ``mariadb-install-db``, ``mariadb``) plus the tools in ``need``.

    Looked up on PATH and in the usual sbin/bin directories, because
    ``mariadbd`` lives in ``/usr/sbin`` which is often not on a user's PATH.
    """
    tools = {key: path for key, names in _NAMES.items() if (path := _which(names)) is not None}
    missing = [_NAMES[k][0] for k in (*_SERVER_TOOLS, *need) if k not in tools]
    if missing:
        raise PreflightError(f"MariaDB binaries not found: {', '.join(missing)}", hint=INSTALL_HINT)
    try:
        out = subprocess.run(
            [tools["mariadbd"], "--no-defaults", "--version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PreflightError(f"{tools['mariadbd']} --version failed: {exc}", hint=INSTALL_HINT) from None
    m = re.search(r"Ver\s+(\S+)", out)
    return MariaBinaries(tools, m.group(1) if m else out.strip())


def run_as_for_mariadb() -> RunAs | None:
    """The account the server runs as: None when we are not root (it runs as us)."""
    return unprivileged_user("mysql", "nobody")


@dataclass
class MariaServer:
    """One data directory and the ``mariadbd`` that runs on it.

    ``port=None`` means ``--skip-networking`` (socket only); otherwise the
    server binds 127.0.0.1 on that port and nothing else.
    """

    bin: MariaBinaries
    root: Path
    run_as: RunAs | None
    port: int | None = None
    on_started: Callable[[ProcessIdentity], None] | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "mariadbd.sock"

    @property
    def pid_file(self) -> Path:
        return self.socket_dir / "mariadbd.pid"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def error_log(self) -> Path:
        return self.log_dir / "mariadbd.err"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def _as_server(self) -> dict[str, Any]:
        if self.run_as is None:
            return {}
        return {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}

    def prepare_dirs(self) -> None:
        """Private 0700 directories owned by the server's user (socket, log, tmp)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for d in (self.socket_dir, self.log_dir, self.tmp_dir):
            private_dir(d, self.run_as)
        private_log(self.error_log, self.run_as)  # mariadbd appends to it and keeps its 0600

    def install_db(self, *, timeout: float = 120) -> None:
        """A fresh system schema whose only admin is this OS account, over the socket (unix_socket auth).

        No password exists at all: the only way in is the private socket as
        the account that ran the drill.
        """
        self.prepare_dirs()
        private_dir(self.datadir, self.run_as)
        args = [
            self.bin.tool("install_db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={os_user()}",
            "--skip-test-db",
            "--skip-name-resolve",
        ]
        if self.run_as is not None:
            args.append(f"--user={self.run_as.name}")
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False, cwd="/", start_new_session=True
            )
        except subprocess.TimeoutExpired:
            raise InfrastructureError(f"mariadb-install-db did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            raise InfrastructureError(
                f"mariadb-install-db failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}"
            )

    def server_args(self, extra: Sequence[str] = ()) -> list[str]:
        listen = ["--skip-networking"] if self.port is None else ["--bind-address=127.0.0.1", f"--port={self.port}"]
        return [
            self.bin.tool("mariadbd"),
            "--no-defaults",  # must be first: no /etc/mysql file may add networking or a binlog dir
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.tmp_dir}",
            f"--secure-file-priv={self.tmp_dir}",
            *listen,
            "--skip-name-resolve",
            "--default-time-zone=+00:00",
            "--event-scheduler=OFF",
            "--skip-slave-start",
            "--max-allowed-packet=1G",
            "--innodb-buffer-pool-size=128M",
            *extra,
        ]

    def start(self, extra: Sequence[str] = ()) -> int:
        """Start ``mariadbd`` in its own session and return its pid without waiting for readiness."""
        self.prepare_dirs()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        out = open_private_log(self.log_dir / "mariadbd.stderr", "ab")
        try:
            self._proc = subprocess.Popen(
                self.server_args(extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **self._as_server(),
            )
        except OSError as exc:
            raise InfrastructureError(f"cannot start mariadbd: {exc}") from None
        finally:
            out.close()
        ident = identity_of(self._proc.pid)  # Popen returns after exec: this is mariadbd, as its user
        if ident is not None and self.on_started is not None:
            self.on_started(ident)
        return self._proc.pid

    def pid(self) -> int | None:
        """The server's pid: from our child handle, else the pid file, else a /proc scan for the datadir."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text().strip())
            if process_alive(pid) and any(f"--datadir={self.datadir}" == a for a in cmdline(pid)):
                return pid
        for pid in pids_using(self.root):
            if f"--datadir={self.datadir}" in cmdline(pid):
                return pid
        return None

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid() is not None

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, n: int = 8) -> str:
        lines: list[str] = []
        for p in (self.error_log, self.log_dir / "mariadbd.stderr"):
            with contextlib.suppress(OSError):
                lines += p.read_text(errors="replace").strip().splitlines()
        interesting = [ln for ln in lines if "[ERROR]" in ln or "[Warning]" in ln] or lines
        return " | ".join(interesting[-n:]) or "(no log)"

    def connect(self, user: str | None = None, password: str | None = None, database: str | None = None) -> Any:
        """A pymysql connection over the private socket (autocommit)."""
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket),
            user=user or os_user(),
            password=password or "",
            database=database,
            autocommit=True,
            connect_timeout=5,
            read_timeout=600,
            charset="utf8mb4",
        )

    def wait_accepting(self, timeout: float = 60, *, user: str | None = None) -> None:
        """Block (real time) until the server answers over its socket; used by the demo and tests."""
        import pymysql

        def accepting() -> bool:
            if not self.running():
                raise InfrastructureError(f"mariadbd exited (code {self.exit_code()}): {self.log_tail()}")
            if self.socket.exists():
                try:
                    self.connect(user=user).close()
                    return True
                except pymysql.err.OperationalError:
                    pass
            return False

        if not until(SystemClock(), timeout, accepting, "mariadbd accepting", policy=every(0.05)):
            raise InfrastructureError(f"mariadbd did not accept connections in {timeout:.0f}s: {self.log_tail()}")

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM (a clean shutdown), then SIGKILL; True once no process of ours is left.

        Signals rather than ``mariadb-admin shutdown`` because a restored
        server's accounts are the source's: we may hold no credentials for
        it. Waits are real time: a process does not care about fake clocks.
        """
        if self.root.exists() or self._proc is not None:
            pid = self.pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
                self._wait_gone([pid], timeout)
        # whatever still names our directory (a server without pid file, a client, mariadb-backup)
        left = pids_using(self.root)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._wait_gone(left, 10)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        return not pids_using(self.root) and (self._proc is None or self._proc.poll() is not None)

    def _wait_gone(self, pids: list[int], timeout: float) -> None:
        def gone() -> bool:
            if self._proc is not None:
                self._proc.poll()
            return not any(process_alive(p) for p in pids)

        until(SystemClock(), timeout, gone, "mariadbd gone", policy=every(0.05))


def innodb_args(work: Path) -> list[str]:
    """InnoDB settings the datafiles were created with (from backup-my.cnf) that the server must match."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for line in (work / "backup-my.cnf").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("innodb_page_size", "innodb_undo_tablespaces") and value.strip():
                out.append(f"--{key.strip().replace('_', '-')}={value.strip()}")
    return out
