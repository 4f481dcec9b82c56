"""Local MariaDB backend: PITR from a ``mariadb-backup`` backup + binary logs,
or a ``mariadb-dump`` SQL file, into a throwaway server only this drill can reach.

PITR is the MariaDB way: copy the physical backup into the run's directory,
``mariadb-backup --prepare`` it (crash recovery of the copied redo log),
``--move-back`` into a fresh datadir, start it, then replay the source's
binary logs from the coordinates the backup recorded with ``mariadb-binlog
--start-position=P --stop-datetime=T | mariadb``. Binlog event timestamps
have one-second resolution, so the replay stops at the first event stamped at
or after ``floor(target)``: nothing after the target is ever applied, and the
recovery point says so (``effective_stop``). ``mariadb-binlog`` reads
``--stop-datetime`` in the local time zone of the process running it, so it
always runs with ``TZ=UTC`` and gets a UTC time.

Isolation: ``--no-defaults`` (no option file can add a listener, a binlog
directory or replication), ``--skip-networking`` (or 127.0.0.1 only when
``settings.extra["mariadb_listen"] == "loopback"``), binary logging off (the
restored server never writes into the source's binlog directory; the source
binlogs are only ever read), event scheduler off, replicas not started, a
private 0700 socket directory owned by the server's user. Each is read back
from the running server and recorded as an isolation fact.

Credentials: a PITR server carries the source's accounts, whose passwords
the drill does not know. It is therefore started with ``--skip-grant-tables``
*and* ``--skip-networking`` (only the private socket can reach it), the
binlogs are replayed, and then ``FLUSH PRIVILEGES`` turns authentication back
on and a drill user with a random in-memory password is created. A dump
restore starts from ``mariadb-install-db`` whose only admin is the runner's OS
account over ``unix_socket``: no password exists anywhere on disk.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from drills.backends.base import BackendSettings, PreflightReport, StepContext
from drills.clock import iso
from drills.errors import (
    DeadlineExceeded,
    InfrastructureError,
    IsolationError,
    PreflightError,
    RestoreFailed,
    TeardownError,
)
from drills.localmaria import (
    MAX_SOCKET_PATH,
    MariaBinaries,
    MariaServer,
    RunAs,
    chown_to,
    find_maria_binaries,
    free_port,
    open_private_log,
    os_user,
    pids_using,
    run_as_for_mariadb,
    uid_of,
    unreachable_ancestor,
)
from drills.procs import ProcessIdentity, identity_of, start_wall_time, stop_proven, user_name, why_not_ours
from drills.resources import Resource, TeardownResult
from drills.sources import MariadbDumpSource, MariadbPitrSource
from validators.endpoint import Endpoint, Secret

__all__ = [
    "NAME",
    "SERVER_KIND",
    "BinlogPlan",
    "LocalMariadb",
    "create",
    "inspect_binlogs",
    "teardown_server",
]

NAME = "local-mariadb"
SERVER_KIND = "mariadb-server"
ROOT_NAME = "mariadb"
OWNER_FILE = ".restore-drills-owner"

_EVENT_HEADER = re.compile(rb"^#(\d{6})\s+(\d{1,2}:\d{2}:\d{2})\s+server id\s")
_CLIENT_ERROR_LINE = re.compile(r"at line (\d+)")


def _timeout(ctx: StepContext, floor: float = 30.0) -> float:
    """A subprocess timeout from the state's deadline, bounded both ways (a deadline may be "none": huge)."""
    return min(max(floor, ctx.remaining_seconds()), 7 * 24 * 3600.0)


def create(source: Any, settings: BackendSettings) -> LocalMariadb:
    return LocalMariadb(source, settings)


# ---------------------------------------------------------------- backup & binlog inspection


@dataclass(frozen=True)
class BinlogPlan:
    """What a PITR replay reads: the backup's coordinates and the binlog files after it."""

    start_file: str
    start_position: int
    gtid: str | None
    files: tuple[Path, ...]  # from start_file onward, contiguous
    sizes: tuple[int, ...]
    backup_end: datetime
    backup_end_basis: str
    last_event: datetime | None


def _utc_mariadb_env() -> dict[str, str]:
    """mariadb-binlog prints and parses datetimes in the process's local zone: pin it to UTC."""
    return {"TZ": "UTC", "LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _binlog_info(backup: Path) -> tuple[str, int, str | None]:
    for name in ("mariadb_backup_binlog_info", "xtrabackup_binlog_info"):
        p = backup / name
        if p.exists():
            parts = p.read_text().split()
            if len(parts) >= 2 and parts[1].isdigit():
                return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else None
            raise PreflightError(f"{p}: unreadable binlog coordinates: {p.read_text().strip()!r}")
    raise PreflightError(
        f"{backup}: the backup recorded no binlog coordinates (xtrabackup_binlog_info)",
        hint="the source must run with log_bin enabled when mariadb-backup --backup runs",
    )


def _backup_end(backup: Path) -> tuple[datetime, str]:
    """When the backup finished: ``end_time`` of xtrabackup_info, in this machine's local zone.

    mariadb-backup writes it as a naive local time; we assume the backup ran on
    a machine in the same zone as this one and say so in the evidence.
    """
    info = backup / "xtrabackup_info"
    if not info.exists():
        info = backup / "mariadb_backup_info"
    with contextlib.suppress(OSError):
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "end_time":
                local = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S").astimezone()
                return local.astimezone(UTC), f"{info.name} end_time read as local time ({local.tzname()})"
    mtime = (backup / "xtrabackup_checkpoints").stat().st_mtime
    return datetime.fromtimestamp(mtime, UTC), "mtime of xtrabackup_checkpoints (no end_time recorded)"


def _binlog_number(name: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"(.+)\.(\d{6,})", name)
    return (m.group(1), int(m.group(2))) if m else None


def _binlog_sequence(binlogs: Path, start_file: str) -> list[str]:
    """Binlog names from ``start_file`` onward, per the ``.index`` file (else the directory listing)."""
    parsed = _binlog_number(start_file)
    if parsed is None:
        raise PreflightError(f"binlog file name {start_file!r} from the backup is not of the form base.NNNNNN")
    base, _ = parsed
    index = binlogs / f"{base}.index"
    if index.exists():
        # the index holds the source's paths; the files may have been copied elsewhere since
        names = [Path(line.strip()).name for line in index.read_text().splitlines() if line.strip()]
    else:
        names = sorted(p.name for p in binlogs.iterdir() if (b := _binlog_number(p.name)) and b[0] == base)
    if start_file not in names:
        names = [start_file, *names]
    names = sorted(set(names), key=lambda n: (_binlog_number(n) or ("", -1))[1])
    return [n for n in names if (_binlog_number(n) or ("", -1))[1] >= parsed[1]]


def last_event_time(binlog_tool: str, path: Path, timeout: float = 300) -> datetime | None:
    """Timestamp (UTC, whole seconds) of the last event in one binlog file, read with mariadb-binlog."""
    proc = subprocess.Popen(
        [binlog_tool, "--no-defaults", "--base64-output=decode-rows", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_utc_mariadb_env(),
    )
    last: bytes | None = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"#") and _EVENT_HEADER.match(line):
            last = line
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise PreflightError(f"mariadb-binlog cannot read {path}: {err.decode(errors='replace').strip()[-300:]}")
    if last is None:
        return None
    m = _EVENT_HEADER.match(last)
    assert m is not None
    return datetime.strptime(m.group(1).decode() + " " + m.group(2).decode(), "%y%m%d %H:%M:%S").replace(tzinfo=UTC)


def inspect_binlogs(bins: MariaBinaries, backup: Path, binlogs: Path) -> BinlogPlan:
    """Check the backup and the binlogs can reach a target, without side effects."""
    if not (backup / "xtrabackup_checkpoints").exists():
        raise PreflightError(
            f"{backup}: not a mariadb-backup backup (no xtrabackup_checkpoints)",
            hint="give the --target-dir of `mariadb-backup --backup`",
        )
    checkpoints = (backup / "xtrabackup_checkpoints").read_text(errors="replace")
    if re.search(r"backup_type\s*=\s*incremental", checkpoints):
        raise PreflightError(f"{backup}: an incremental backup; drills restore full backups only")
    if not binlogs.is_dir():
        raise PreflightError(f"{binlogs}: not a directory of binary logs")
    start_file, position, gtid = _binlog_info(backup)
    names = _binlog_sequence(binlogs, start_file)
    missing = [n for n in names if not (binlogs / n).is_file()]
    numbers = [(_binlog_number(n) or ("", 0))[1] for n in names]
    gaps = [f"{start_file.rsplit('.', 1)[0]}.{k:06d}" for a, b in itertools.pairwise(numbers) for k in range(a + 1, b)]
    if missing or gaps:
        listed = sorted(set(missing + gaps))
        raise PreflightError(
            f"binlogs needed after the backup ({start_file}:{position}) are missing from {binlogs}: "
            + ", ".join(listed),
            hint="replay cannot skip a binlog; restore the files from the binlog archive",
        )
    files = tuple(binlogs / n for n in names)
    sizes = tuple(f.stat().st_size for f in files)
    if position > sizes[0]:
        raise PreflightError(f"{files[0]} is {sizes[0]} bytes, shorter than the backup's position {position}")
    end, basis = _backup_end(backup)
    last = last_event_time(bins.tool("binlog"), files[-1])
    return BinlogPlan(start_file, position, gtid, files, sizes, end, basis, last)


def _sniff_dump(path: Path) -> tuple[bool, str]:
    """(gzip?, first line) of a dump, reading a few bytes only."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    gz = magic == b"\x1f\x8b"
    try:
        opener: Any = gzip.open if gz else open
        with opener(path, "rb") as fh:
            first = fh.readline(512).decode("utf-8", errors="replace").strip()
    except (OSError, EOFError) as exc:
        raise PreflightError(f"{path}: cannot read the dump: {exc}") from None
    return gz, first


# ---------------------------------------------------------------- the backend


class LocalMariadb:
    name = NAME

    def __init__(self, source: MariadbPitrSource | MariadbDumpSource | None, settings: BackendSettings) -> None:
        self.source = source
        self.settings = settings
        self.binaries: MariaBinaries | None = None
        self.run_as: RunAs | None = None
        self.plan: BinlogPlan | None = None
        self.server: MariaServer | None = None
        self.loopback = settings.extra.get("mariadb_listen") == "loopback"
        self._stop_datetime: datetime | None = None
        self._phase = "new"  # new -> started -> loaded -> ready
        self._user = f"drill_{secrets.token_hex(4)}"
        self._password = Secret(secrets.token_urlsafe(24))
        self._database: str | None = None
        self._version: str | None = None
        self._isolation: list[dict[str, Any]] = []
        self._dump_gz = False
        self._port: int | None = None
        self._replicas_running = -1  # unknown until read from the running server

    @property
    def root(self) -> Path:
        return self.settings.run_dir / ROOT_NAME

    def _user_name(self) -> str:
        return self.run_as.name if self.run_as else os_user()

    # ------------------------------------------------------------ preflight

    def preflight(self, ctx: StepContext) -> PreflightReport:
        """Binaries, backup, binlogs, target range and the run directory; creates nothing."""
        src = self.source
        pitr = isinstance(src, MariadbPitrSource)
        self.binaries = find_maria_binaries(need=("backup", "binlog") if pitr else ())
        self.run_as = run_as_for_mariadb()
        if self.run_as is not None:
            ctx.log.info("server_user", user=self.run_as.name, reason="a restored database never runs as root")
        blocked = unreachable_ancestor(self.settings.run_dir, self.run_as)
        if blocked is not None:
            raise PreflightError(
                f"the server user {self._user_name()} cannot reach the run directory: {blocked} is not traversable",
                hint="use a run directory under a path others may traverse (e.g. /var/tmp)",
            )
        sock = self.root / "sock" / "mariadbd.sock"
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise PreflightError(
                f"socket path {sock} is longer than {MAX_SOCKET_PATH} bytes", hint="use a shorter run directory"
            )
        facts = {
            "mariadbd": self.binaries.tool("mariadbd"),
            "server_version": self.binaries.version,
            "server_user": self._user_name(),
        }
        if isinstance(src, MariadbPitrSource):
            return self._preflight_pitr(src, facts)
        if isinstance(src, MariadbDumpSource):
            return self._preflight_dump(src, facts)
        raise PreflightError(f"local-mariadb cannot restore a {type(src).__name__}")

    def _preflight_pitr(self, src: MariadbPitrSource, facts: dict[str, Any]) -> PreflightReport:
        assert self.binaries is not None
        plan = inspect_binlogs(self.binaries, src.backup, src.binlogs)
        target = src.target_time
        earliest, latest = plan.backup_end, plan.last_event
        rng = f"restorable range {iso(earliest)} .. {iso(latest) if latest else '(no events)'}"
        if isinstance(target, datetime):
            if target < earliest:
                raise PreflightError(
                    f"target_time {iso(target)} is before the backup finished ({iso(earliest)}); {rng}",
                    hint="choose a later target, or an older backup",
                )
            if latest is None or target > latest:
                raise PreflightError(
                    f"target_time {iso(target)} is after the last event in the binlogs; {rng}",
                    hint="choose an earlier target, `latest`, or copy the newer binlogs",
                )
            # binlog timestamps are whole seconds: stop at the first event stamped at or after floor(target)
            self._stop_datetime = target.astimezone(UTC).replace(microsecond=0)
        self.plan = plan
        return PreflightReport(
            source={"engine": "mariadb", "identifier": str(src.backup), "binlogs": str(src.binlogs)},
            recovery_point={
                "kind": "pitr",
                "backup": {
                    "path": str(src.backup),
                    "end_time": iso(plan.backup_end),
                    "end_time_basis": plan.backup_end_basis,
                    "binlog_file": plan.start_file,
                    "binlog_position": plan.start_position,
                    "gtid": plan.gtid,
                },
                "binlogs": [{"file": f.name, "size_bytes": s} for f, s in zip(plan.files, plan.sizes, strict=True)],
                "target_time": iso(target) if isinstance(target, datetime) else "latest",
                "effective_stop": iso(self._stop_datetime) if self._stop_datetime else "end of binlogs",
                "stop_rule": "events stamped before effective_stop (binlog timestamps have 1 s resolution)",
                "earliest_restorable_time": iso(plan.backup_end),
                "latest_restorable_time": iso(plan.last_event) if plan.last_event else None,
            },
            facts=facts,
        )

    def _preflight_dump(self, src: MariadbDumpSource, facts: dict[str, Any]) -> PreflightReport:
        if not src.dump.is_file():
            raise PreflightError(f"{src.dump}: dump file not found")
        gz, first = _sniff_dump(src.dump)
        self._dump_gz = gz
        return PreflightReport(
            source={"engine": "mariadb", "identifier": str(src.dump)},
            recovery_point={
                "kind": "dump",
                "dump": str(src.dump),
                "compressed": "gzip" if gz else None,
                "size_bytes": src.dump.stat().st_size,
                "header": first[:200],
                "taken_at": iso(src.taken_at) if src.taken_at else None,
            },
            facts=facts,
        )

    # ------------------------------------------------------------ restore

    def _register(self, ctx: StepContext) -> MariaServer:
        """Journal the server, then lay out its directory (never the other way round)."""
        assert self.binaries is not None
        root = self.root
        server = MariaServer(self.binaries, root, self.run_as, port=None)
        port = free_port() if self.loopback else None
        resource = Resource(
            kind=SERVER_KIND,
            id=str(server.datadir),
            backend=NAME,
            attrs={
                "run_id": self.settings.run_id,
                "run_dir": str(root),
                "datadir": str(server.datadir),
                "socket": str(server.socket),
                "pid_file": str(server.pid_file),
                "port": port,
                "mariadbd": self.binaries.tool("mariadbd"),
                "run_as": self.run_as.name if self.run_as else None,
            },
        )
        ctx.register(resource)
        # journaled again each time mariadbd starts: teardown signals only that process
        server.on_started = lambda ident: ctx.register(server_started(resource, ident))
        root.mkdir(parents=True, exist_ok=True)
        (root / OWNER_FILE).write_text(self.settings.run_id + "\n")
        server.prepare_dirs()
        self.server = server
        self._port = port
        return server

    def restore(self, ctx: StepContext) -> None:
        """Build the datadir and start the server (socket only); ``await_ready`` brings it to the target."""
        if self.binaries is None:
            self.preflight(ctx)
        server = self._register(ctx)
        if isinstance(self.source, MariadbPitrSource):
            self._restore_pitr(self.source, server, ctx)
            extra = ["--skip-log-bin", "--skip-grant-tables", *self._innodb_args(server.root / "work")]
        else:
            server.install_db(timeout=_timeout(ctx))
            extra = ["--skip-log-bin"]
        server.start(extra)
        ctx.mark("server_started", iso(ctx.clock.now()))
        self._phase = "started"

    def _run(self, args: list[str], what: str, ctx: StepContext) -> None:
        timeout = _timeout(ctx)
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False, cwd="/", start_new_session=True
            )
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(f"{what} did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            raise RestoreFailed(
                f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}"
            )

    def _restore_pitr(self, src: MariadbPitrSource, server: MariaServer, ctx: StepContext) -> None:
        """Copy, prepare and move the backup into a fresh datadir; the source backup is only read."""
        work = server.root / "work"
        ctx.log.info("copy_backup", source=str(src.backup), to=str(work))
        shutil.copytree(src.backup, work, symlinks=True)
        self._run(
            [self.bin("backup"), "--no-defaults", "--prepare", f"--target-dir={work}"], "mariadb-backup --prepare", ctx
        )
        ctx.mark("backup_prepared", iso(ctx.clock.now()))
        self._run(
            [self.bin("backup"), "--no-defaults", "--move-back", f"--target-dir={work}", f"--datadir={server.datadir}"],
            "mariadb-backup --move-back",
            ctx,
        )
        server.datadir.chmod(0o700)
        chown_to(server.datadir, self.run_as)

    def _innodb_args(self, work: Path) -> list[str]:
        """InnoDB settings the datafiles were created with (from backup-my.cnf) that the server must match."""
        out: list[str] = []
        with contextlib.suppress(OSError):
            for line in (work / "backup-my.cnf").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() in ("innodb_page_size", "innodb_undo_tablespaces") and value.strip():
                    out.append(f"--{key.strip().replace('_', '-')}={value.strip()}")
        return out

    def bin(self, tool: str) -> str:
        assert self.binaries is not None
        return self.binaries.tool(tool)

    # ------------------------------------------------------------ waiting & loading

    def await_ready(self, ctx: StepContext) -> None:
        """Wait for the socket, replay binlogs / load the dump, create the drill user, prove isolation.

        Safe to call again after a failure: finished phases are not redone.
        """
        server = self._need_server()
        if self._phase == "started":
            self._wait_accepting(server, ctx, user="root" if self._pitr else None)
            ctx.mark("server_accepting", iso(ctx.clock.now()))
            if isinstance(self.source, MariadbPitrSource):
                self._replay(server, ctx)
                ctx.mark("binlogs_replayed", iso(ctx.clock.now()))
            elif isinstance(self.source, MariadbDumpSource):
                self._load_dump(self.source, server, ctx)
                ctx.mark("dump_loaded", iso(ctx.clock.now()))
            self._phase = "loaded"
        if self._phase == "loaded":
            self._create_drill_user(server)
            if self.loopback:
                self._restart_on_loopback(server, ctx)
            self._phase = "ready"
        self._isolation = self._read_isolation(server)
        ctx.mark("ready", iso(ctx.clock.now()))

    @property
    def _pitr(self) -> bool:
        return isinstance(self.source, MariadbPitrSource)

    def _need_server(self) -> MariaServer:
        if self.server is None:
            raise InfrastructureError("local-mariadb: restore has not run")
        return self.server

    def _wait_accepting(
        self, server: MariaServer, ctx: StepContext, *, user: str | None, password: str | None = None
    ) -> None:
        """Poll the socket on the injected clock until the server answers, it dies, or the deadline passes."""
        import pymysql

        delay = 0.02
        while True:
            if not server.running():
                raise RestoreFailed(f"the restored server exited (code {server.exit_code()}): {server.log_tail()}")
            if server.socket.exists():
                try:
                    with contextlib.closing(server.connect(user=user, password=password)) as conn, conn.cursor() as cur:
                        cur.execute("select version()")
                        self._version = str(cur.fetchone()[0])
                        return
                except pymysql.err.OperationalError as exc:
                    ctx.log.debug("not_ready", reason=str(exc))
            if ctx.remaining_seconds() <= 0:
                raise DeadlineExceeded(f"the restored server was not ready in time; log: {server.log_tail(5)}")
            ctx.clock.sleep(min(delay, ctx.remaining_seconds()))
            delay = min(delay * 1.5, 0.25)

    def _client(self, server: MariaServer, user: str, database: str | None) -> list[str]:
        args = [
            self.bin("client"),
            "--no-defaults",
            f"--socket={server.socket}",
            f"--user={user}",
            "--binary-mode",
            "--max-allowed-packet=1G",
            "--default-character-set=utf8mb4",
            "--batch",
        ]
        return [*args, database] if database else args

    def _replay(self, server: MariaServer, ctx: StepContext) -> None:
        """``mariadb-binlog --start-position --stop-datetime (TZ=UTC) | mariadb`` from the backup's coordinates."""
        plan = self.plan
        assert plan is not None
        cmd = [
            self.bin("binlog"),
            "--no-defaults",
            f"--start-position={plan.start_position}",
            *([f"--stop-datetime={self._stop_datetime:%Y-%m-%d %H:%M:%S}"] if self._stop_datetime else []),
            *[str(f) for f in plan.files],
        ]
        ctx.log.info("replay_binlogs", files=[f.name for f in plan.files], stop=cmd[3] if self._stop_datetime else None)
        timeout = _timeout(ctx)
        errlog = server.log_dir / "replay.err"
        with open_private_log(errlog) as err:
            reader = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, env=_utc_mariadb_env(), cwd="/", start_new_session=True
            )
            try:
                client = subprocess.run(
                    self._client(server, "root", None),
                    stdin=reader.stdout,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                    cwd="/",
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                reader.kill()
                raise DeadlineExceeded(f"binlog replay did not finish within {timeout:.0f}s") from None
            finally:
                if reader.stdout is not None:
                    reader.stdout.close()
            reader_rc = reader.wait(timeout=30)
        if client.returncode != 0:
            raise RestoreFailed(f"binlog replay failed in the mariadb client: {client.stderr.strip()[-600:]}")
        if reader_rc != 0:
            raise RestoreFailed(f"mariadb-binlog failed (exit {reader_rc}): {errlog.read_text().strip()[-600:]}")

    def _dump_lines(self, path: Path) -> Iterator[bytes]:
        opener: Any = gzip.open if self._dump_gz else open
        with opener(path, "rb") as fh:
            yield from fh

    def _load_dump(self, src: MariadbDumpSource, server: MariaServer, ctx: StepContext) -> None:
        """Stream the dump into the client; a missing ``-- Dump completed`` trailer means it was cut short."""
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"create database if not exists `{src.database.replace('`', '``')}`")
        timeout = _timeout(ctx)
        errpath = server.log_dir / "client.err"
        with open_private_log(errpath) as err:
            client = subprocess.Popen(
                self._client(server, os_user(), src.database),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd="/",
                start_new_session=True,
            )
            assert client.stdin is not None
            timer = threading.Timer(timeout, client.kill)
            timer.start()
            first, last, used, problem = b"", b"", None, None
            try:
                first, last, used = self._stream_dump(src.dump, client.stdin)
            except (OSError, EOFError, gzip.BadGzipFile) as exc:
                if not isinstance(exc, BrokenPipeError):
                    problem = f"cannot read {src.dump}: {exc}"
                with contextlib.suppress(OSError):
                    client.kill()
            finally:
                with contextlib.suppress(OSError):
                    client.stdin.close()
                rc = client.wait()
                timer.cancel()
        message = errpath.read_text(errors="replace").strip()
        if rc != 0 or problem:
            m = _CLIENT_ERROR_LINE.search(message)
            where = f" (dump line {m.group(1)})" if m else ""
            errors = [ln for ln in message.splitlines() if ln.startswith("ERROR")]  # not the echoed statement
            reason = problem or (errors[-1][:600] if errors else message[-600:]) or f"client exit {rc}"
            if rc < 0 and not problem and not message:
                reason = f"the mariadb client was killed after {timeout:.0f}s"
            raise RestoreFailed(f"loading the dump {src.dump} failed{where}: {reason}")
        commented = first.startswith((b"-- MariaDB dump", b"-- MySQL dump"))
        if commented and not last.startswith(b"-- Dump completed"):
            raise RestoreFailed(
                f"the dump {src.dump} is truncated: it has no '-- Dump completed' trailer (last line: {last[:120]!r})",
                hint="the dump was cut short while being written or copied",
            )
        self._database = used or src.database

    def _stream_dump(self, path: Path, sink: IO[bytes]) -> tuple[bytes, bytes, str | None]:
        """Write the dump to the client in 1 MiB batches; return (first line, last line, first USE db)."""
        first = last = b""
        used: str | None = None
        batch: list[bytes] = []
        size = 0
        for n, line in enumerate(self._dump_lines(path)):
            if n < 10 and line.startswith((b"-- MariaDB dump", b"-- MySQL dump")):
                first = line  # newer dumps open with a sandbox-mode line before this header
            if line.strip():
                last = line.strip()
            if used is None and line.startswith(b"USE `"):
                used = line[5:].split(b"`", 1)[0].decode("utf-8", errors="replace")
            batch.append(line)
            size += len(line)
            if size >= 1 << 20:
                sink.write(b"".join(batch))
                batch, size = [], 0
        if batch:
            sink.write(b"".join(batch))
        return first, last, used

    def _create_drill_user(self, server: MariaServer) -> None:
        """A user with a random in-memory password and read-only rights, for the validators."""
        user = "root" if self._pitr else None
        pw = self._password.reveal().replace("'", "''")
        with contextlib.closing(server.connect(user=user)) as conn, conn.cursor() as cur:
            cur.execute("show all slaves status")  # started with --skip-slave-start: none may run
            cols = [d[0] for d in cur.description or ()]
            self._replicas_running = sum(
                1 for row in cur.fetchall() if dict(zip(cols, row, strict=False)).get("Slave_IO_Running") == "Yes"
            )
            if self._pitr:
                cur.execute("flush privileges")  # authentication back on; this session keeps its rights
            hosts = ["localhost", "127.0.0.1"] if self.loopback else ["localhost"]
            for host in hosts:
                cur.execute(f"create or replace user '{self._user}'@'{host}' identified by '{pw}'")
                cur.execute(f"grant select, show view, show databases on *.* to '{self._user}'@'{host}'")

    def _restart_on_loopback(self, server: MariaServer, ctx: StepContext) -> None:
        """Restart with grants on and 127.0.0.1 only: never listen while grants are skipped."""
        if not server.stop(timeout=_timeout(ctx, floor=10.0)):
            raise RestoreFailed("the restored server did not stop for its restart on 127.0.0.1")
        server.port = self._port
        extra = ["--skip-log-bin"]
        if self._pitr:
            extra += self._innodb_args(server.root / "work")
        server.start(extra)
        if self._pitr:
            self._wait_accepting(server, ctx, user=self._user, password=self._password.reveal())
        else:
            self._wait_accepting(server, ctx, user=None)

    def _connect_drill(self, server: MariaServer) -> Any:
        return server.connect(user=self._user, password=self._password.reveal())

    # ------------------------------------------------------------ endpoint & facts

    def endpoint(self, ctx: StepContext) -> Endpoint:
        """The drill user over the private socket (port is 0 when the server has no TCP listener)."""
        server = self._need_server()
        database = self._database or (self.source.database if self.source else "mysql")
        return Endpoint(
            engine="mysql",
            host="localhost",
            port=server.port or 0,
            database=database,
            user=self._user,
            password=self._password,
            unix_socket=str(server.socket),
        )

    def _read_isolation(self, server: MariaServer) -> list[dict[str, Any]]:
        with contextlib.closing(self._connect_drill(server)) as conn, conn.cursor() as cur:
            cur.execute(
                "select @@skip_networking, @@bind_address, @@port, @@socket, @@log_bin, "
                "@@event_scheduler, @@secure_file_priv, @@version"
            )
            skip_net, bind, port, sock, log_bin, events, file_priv, version = cur.fetchone()
        self._version = str(version)
        pid = server.pid()
        uid = uid_of(pid) if pid else None
        want_uid = self.run_as.uid if self.run_as else os.geteuid()
        st = server.socket_dir.stat()
        mode = oct(st.st_mode & 0o777)
        if self.loopback:
            listen_ok = not skip_net and bind == "127.0.0.1"
            listen_detail = "TCP only on 127.0.0.1; plus the private socket"
        else:
            listen_ok = bool(skip_net)
            listen_detail = "no TCP listener: reachable only through the private socket"
        facts: list[dict[str, Any]] = [
            {
                "check": "listen",
                "subject": "restored server",
                "value": {"skip_networking": int(skip_net), "bind_address": bind, "port": int(port), "socket": sock},
                "passed": listen_ok and sock == str(server.socket),
                "detail": listen_detail,
            },
            {
                "check": "socket_directory_private",
                "subject": str(server.socket_dir),
                "value": mode,
                "passed": mode == "0o700" and st.st_uid == want_uid,
                "detail": f"owned by {self._user_name()}",
            },
            {
                "check": "server_user",
                "subject": f"mariadbd pid {pid}",
                "value": uid,
                "passed": uid is not None and uid == want_uid and uid != 0,
                "detail": f"runs as {self._user_name()}, not root",
            },
            {
                "check": "binlog_off",
                "subject": "restored server",
                "value": int(log_bin),
                "passed": int(log_bin) == 0,
                "detail": "the restored server writes no binary log, so never into the source's binlog directory",
            },
            {
                "check": "no_scheduler_no_replication",
                "subject": "restored server",
                "value": {"event_scheduler": str(events), "replicas_running": self._replicas_running},
                "passed": str(events) == "OFF" and self._replicas_running == 0,
                "detail": "no scheduled event runs and no replica thread connects to a primary",
            },
            {
                "check": "secure_file_priv",
                "subject": "restored server",
                "value": file_priv,
                "passed": bool(file_priv) and str(file_priv).startswith(str(server.root)),
                "detail": "file import/export confined to the run's directory",
            },
        ]
        bad = [f["check"] for f in facts if not f["passed"]]
        if bad:
            raise IsolationError("restored MariaDB server is not isolated: " + ", ".join(bad))
        return facts

    def isolation_facts(self) -> list[dict[str, Any]]:
        if not self._isolation and self.server is not None and self._phase == "ready":
            self._isolation = self._read_isolation(self.server)
        return list(self._isolation)

    def target_facts(self) -> dict[str, Any]:
        s = self.server
        return {
            "kind": NAME,
            "host": socket.gethostname(),
            "datadir": str(s.datadir) if s else None,
            "socket": str(s.socket) if s else None,
            "port": s.port if s else None,
            "server_version": self._version or (self.binaries.version if self.binaries else None),
            "server_user": self._user_name(),
            "binlogs_read_from": str(self.source.binlogs) if isinstance(self.source, MariadbPitrSource) else None,
        }

    # ------------------------------------------------------------ teardown

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        result = teardown_server(resource, ctx)
        if self.server is not None and str(self.server.datadir) == resource.id:
            self.server._proc = None
        return result


def server_started(resource: Resource, ident: ProcessIdentity) -> Resource:
    """The server's record with the identity of the running ``mariadbd``, journaled right after it starts."""
    return Resource(resource.kind, resource.id, resource.backend, {**resource.attrs, **ident.to_attrs()})


def _server_uid(run_as: Any) -> int:
    if not run_as:
        return os.geteuid()
    try:
        return pwd.getpwnam(str(run_as)).pw_uid
    except KeyError:
        raise TeardownError(f"the server user {run_as!r} of the journal does not exist here") from None


def _helper_of_run(pid: int, uids: set[int], since: float | None) -> str | None:
    """None when ``pid`` (which names the run's directory) is provably a process of this run; else why not.

    A helper (``mariadb-backup``, ``mariadb-binlog``, the client, or a
    ``mariadbd`` killed before its start was journaled) is this run's when it
    runs as the runner or the server user and started after the run laid out
    its directory (the owner file's time, 2 s of slack for ``btime``).
    """
    ident = identity_of(pid)
    if ident is None:
        return "gone"
    if ident.uid not in uids:
        return f"it runs as {user_name(ident.uid)}"
    started = start_wall_time(pid)
    if since is None or started is None or started < since - 2.0:
        return "it started before this run laid out its directory"
    return None


def teardown_server(resource: Resource, ctx: StepContext) -> TeardownResult:
    """Stop the server and remove its directory, from the resource record alone; idempotent.

    Removes only ``attrs.run_dir``, and only when it is laid out as this
    backend lays it out (``.../mariadb`` holding ``data``) and carries the
    owner file naming the run (or is empty: the crash came before the file).
    Nothing named by the record is executed. ``mariadbd`` gets SIGTERM (a
    clean shutdown), then SIGKILL, only when it is proven to be the server
    this run started (owner, ``--datadir`` on its command line, start time
    journaled at launch); any other process naming the directory is killed
    only when it is provably this run's (:func:`_helper_of_run`), and one that
    is not keeps the directory in place and is reported.
    """
    root, datadir, since = _checked_layout(resource)
    a = resource.attrs
    stopped, notes, still = _stop_run_processes(a, root, datadir, since)
    if still is not None:
        return TeardownResult(resource, deleted=False, detail=f"server process {still} still running")
    left = pids_using(root)
    if left:
        return TeardownResult(
            resource,
            deleted=False,
            detail=f"{root} kept: process(es) {left} use it but are not proven to be this run's "
            f"({'; '.join(notes) or 'still running'}); stop them yourself, then run `drill teardown` again",
        )
    for _ in range(20):
        shutil.rmtree(root, ignore_errors=True)
        if not root.exists():
            break
        ctx.clock.sleep(0.05)
    if root.exists():
        return TeardownResult(resource, deleted=False, detail=f"{root} could not be removed")
    what = f"server (pid {', '.join(map(str, stopped))}) stopped" if stopped else "no server running"
    detail = "; ".join([f"{what}; {root} removed", *notes])
    ctx.log.info("teardown", resource=resource.id, detail=detail)
    return TeardownResult(resource, deleted=True, detail=detail, verified_at=iso(ctx.clock.now()))


def _checked_layout(resource: Resource) -> tuple[Path, Path, float | None]:
    """The run's directory and data directory, refused unless laid out by this backend for this run.

    Also returns when the run laid the directory out (the owner file's mtime), if it did.
    """
    if resource.kind != SERVER_KIND or resource.backend != NAME:
        raise TeardownError(f"local-mariadb does not own {resource.kind} {resource.id}")
    a = resource.attrs
    root = Path(a["run_dir"])
    datadir = Path(a["datadir"])
    if root.name != ROOT_NAME or datadir.parent != root or Path(resource.id) != datadir or not root.is_absolute():
        raise TeardownError(f"refusing to remove {root}: not a directory this backend laid out")
    if root.is_symlink():
        raise TeardownError(f"refusing to remove {root}: a symbolic link")
    owner = root / OWNER_FILE
    since: float | None = None
    if root.exists():
        owned = owner.exists() and owner.read_text().strip() == str(a.get("run_id", ""))
        if not owned and any(root.iterdir()):
            raise TeardownError(f"refusing to remove {root}: its owner file does not name run {a.get('run_id')}")
        since = owner.stat().st_mtime if owned else None
    return root, datadir, since


def _stop_run_processes(
    a: dict[str, Any], root: Path, datadir: Path, since: float | None
) -> tuple[list[int], list[str], int | None]:
    """Stop the proven server, then the proven helpers; (stopped, notes, pid that would not stop)."""
    uid = _server_uid(a.get("run_as"))
    expected = ProcessIdentity.from_attrs(a)
    notes: list[str] = []
    stopped: list[int] = []
    if expected is not None:

        def ours() -> bool:
            return why_not_ours(expected.pid, expected=expected, uid=uid, datadir=datadir) is None

        why = why_not_ours(expected.pid, expected=expected, uid=uid, datadir=datadir)
        if why is None:
            if not stop_proven(expected, ours, [(signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)]):
                return stopped, notes, expected.pid
            stopped.append(expected.pid)
        elif why != "gone":
            notes.append(f"pid {expected.pid} not signalled: {why}")
    # what else names the directory: helpers (or a server whose start was not journaled)
    uids = {os.geteuid(), uid}
    for pid in pids_using(root):
        why = _helper_of_run(pid, uids, since)
        ident = identity_of(pid)
        if why is None and ident is not None:

            def helper(pid: int = pid) -> bool:
                return _helper_of_run(pid, uids, since) is None

            if stop_proven(ident, helper, [(signal.SIGKILL, 10.0)]):
                stopped.append(pid)
        elif why not in (None, "gone"):
            notes.append(f"pid {pid} not signalled: {why}")
    return stopped, notes, None
