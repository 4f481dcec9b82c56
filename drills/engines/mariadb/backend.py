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

Never a false pass: preflight walks every binlog the target needs (sequence,
readability by the user mariadb-binlog runs as, every event header and CRC;
:mod:`drills.engines.mariadb.binlog`) and knows the exact event the replay must
stop at. The replay stream passes through a tracker on its way to the client,
and the drill fails with :class:`~drills.errors.IncompleteRecovery` unless every
file was emitted to its end and the last one to exactly that event
(:meth:`LocalMariadb.recovery_proof` records both positions). Anything wrong
with the backup itself (missing, unreadable, gapped, damaged, not holding the
target; a dump cut short or holding SQL that fails) is a
:class:`~drills.errors.BackupDefect`: a failed drill with evidence, exit 1.

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
import secrets
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backends.base import BackendSettings, Fact, PreflightReport, StepContext, require_isolated
from drills.clock import iso
from drills.engines.mariadb.accounts import create_drill_user
from drills.engines.mariadb.backup import (
    DumpPrepared,
    PitrPrepared,
    check_backup,
    inspect_dump,
    inspect_pitr,
    pitr_recovery_point,
    reader_for,
    tool_pass,
)
from drills.engines.mariadb.client import client_args, environment_failed, last_lines
from drills.engines.mariadb.declaration import MariadbDumpSource, MariadbPitrSource
from drills.engines.mariadb.dump import feed_dump, judge_dump
from drills.engines.mariadb.isolation import read_isolation
from drills.engines.mariadb.replay import ReplayTracker, judge_replay, pipe
from drills.engines.mariadb.server import (
    MAX_SOCKET_PATH,
    MariaBinaries,
    MariaServer,
    find_maria_binaries,
    innodb_args,
    run_as_for_mariadb,
)
from drills.engines.mariadb.steps import MariaPlan, MariaReady, MariaRestored
from drills.engines.mariadb.teardown import NAME, OWNER_FILE, ROOT_NAME, SERVER_KIND, teardown_server
from drills.engines.server_record import server_started
from drills.errors import (
    BackupDefect,
    DeadlineExceeded,
    InfrastructureError,
    PreflightError,
    RestoreFailed,
)
from drills.osutil import (
    RunAs,
    check_scratch_space,
    chown_tree,
    first_copy_error,
    free_port,
    os_user,
    unreachable_ancestor,
)
from drills.resources import Resource, TeardownResult
from drills.wait import LOCAL, Verdict, poll
from validators.endpoint import Endpoint, Secret

__all__ = ["LocalMariadb", "check_backup", "create"]


def _timeout(ctx: StepContext, floor: float = 30.0) -> float:
    """A subprocess timeout from the state's deadline, bounded both ways (a deadline may be "none": huge)."""
    return min(max(floor, ctx.remaining_seconds()), 7 * 24 * 3600.0)


def create(source: Any, settings: BackendSettings) -> LocalMariadb:
    return LocalMariadb(source, settings)


# ---------------------------------------------------------------- backup checks without a server


# ---------------------------------------------------------------- the backend


class LocalMariadb:
    """The local MariaDB backend; its steps hand on :mod:`drills.engines.mariadb.steps` values."""

    name = NAME

    def __init__(self, source: MariadbPitrSource | MariadbDumpSource | None, settings: BackendSettings) -> None:
        self.source = source
        self.settings = settings
        self.run_as: RunAs | None = None
        self.server: MariaServer | None = None  # for the evidence (target_facts); steps get it handed on
        self.loopback = settings.extra.get("mariadb_listen") == "loopback"
        self._proof: dict[str, Any] | None = None  # where replay / the dump load got to, against what was asked
        # how far await_ready got, so a retried attempt does not redo finished phases: new -> started -> loaded -> ready
        self._phase = "new"
        self._user = f"drill_{secrets.token_hex(4)}"
        self._password = Secret(secrets.token_urlsafe(24))
        self._database: str | None = None  # the dump's own database, once loaded
        self._version: str | None = None  # the binaries' version, then the running server's
        self._port: int | None = None
        self._replicas_running = -1  # unknown until read from the running server

    @property
    def root(self) -> Path:
        return self.settings.run_dir / ROOT_NAME

    def _user_name(self) -> str:
        return self.run_as.name if self.run_as else os_user()

    # ------------------------------------------------------------ preflight

    def preflight(self, ctx: StepContext) -> PreflightReport[MariaPlan]:
        """Binaries, backup, binlogs, target range and the run directory; creates nothing."""
        src = self.source
        pitr = isinstance(src, MariadbPitrSource)
        binaries = find_maria_binaries(need=("backup", "binlog") if pitr else ())
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
        self._version = binaries.version
        facts = {
            "mariadbd": binaries.tool("mariadbd"),
            "server_version": binaries.version,
            "server_user": self._user_name(),
        }
        if isinstance(src, MariadbPitrSource):
            return self._preflight_pitr(src, binaries, facts, ctx)
        if isinstance(src, MariadbDumpSource):
            return self._preflight_dump(src, binaries, facts)
        raise PreflightError(f"local-mariadb cannot restore a {type(src).__name__}")

    def _preflight_pitr(
        self, src: MariadbPitrSource, binaries: MariaBinaries, facts: dict[str, Any], ctx: StepContext
    ) -> PreflightReport[MariaPlan]:
        """The backup, then every binlog the target needs: in sequence, readable by mariadb-binlog's user,
        every event header and checksum sound (see :mod:`drills.engines.mariadb.binlog`)."""
        info, plan = inspect_pitr(src, reader_for(self.run_as))
        binlog_bytes = sum(s.end - s.start for s in plan.scans if s.name in plan.files)
        self._check_space(info.size_bytes + binlog_bytes, "backup and binlogs to replay")
        facts["mariadb_binlog_check"] = tool_pass(
            binaries.tool("binlog"), src.binlogs, plan, self.run_as, _timeout(ctx)
        )
        target = src.target_time
        for problem in plan.not_needed:
            ctx.log.warning("binlog_defect_not_needed", defect=problem, requested=str(plan.requested))
        return PreflightReport(
            source={"engine": "mariadb", "identifier": str(src.backup), "binlogs": str(src.binlogs)},
            recovery_point=pitr_recovery_point(info, plan, target),
            plan=PitrPrepared(binaries, plan),
            facts=facts,
        )

    def _check_space(self, needed: int, what: str) -> None:
        check_scratch_space(self.settings.run_dir.parent, needed, what)

    def _preflight_dump(
        self, src: MariadbDumpSource, binaries: MariaBinaries, facts: dict[str, Any]
    ) -> PreflightReport[MariaPlan]:
        dump = inspect_dump(src.dump)
        if not dump.gz:  # a gzip'd dump's loaded size is not known before reading it all
            self._check_space(dump.size_bytes, "dump to load")
        return PreflightReport(
            source={"engine": "mariadb", "identifier": str(src.dump)},
            recovery_point={
                "kind": "dump",
                **dump.facts(),
                "taken_at": iso(src.taken_at) if src.taken_at else None,
            },
            plan=DumpPrepared(binaries, dump),
            facts=facts,
        )

    # ------------------------------------------------------------ restore

    def _register(self, ctx: StepContext, binaries: MariaBinaries) -> MariaServer:
        """Journal the server, then lay out its directory (never the other way round)."""
        root = self.root
        server = MariaServer(binaries, root, self.run_as, port=None)
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
                "mariadbd": binaries.tool("mariadbd"),
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

    def restore(self, plan: MariaPlan, ctx: StepContext) -> MariaRestored:
        """Build the datadir and start the server (socket only); ``await_ready`` brings it to the target."""
        if isinstance(self.source, MariadbPitrSource) != isinstance(plan, PitrPrepared):
            raise InfrastructureError(f"{NAME}: preflight planned a {type(plan).__name__} for this source")
        server = self._register(ctx, plan.binaries)
        if isinstance(self.source, MariadbPitrSource):
            self._restore_pitr(self.source, plan.binaries, server, ctx)
            extra = ["--skip-log-bin", "--skip-grant-tables", *innodb_args(server.root / "work")]
        else:
            server.install_db(timeout=_timeout(ctx))
            extra = ["--skip-log-bin"]
        server.start(extra)
        ctx.mark("server_started", iso(ctx.clock.now()))
        self._phase = "started"
        return MariaRestored(server, plan)

    def _run(self, args: list[str], what: str, ctx: StepContext) -> None:
        timeout = _timeout(ctx)
        try:
            proc = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False, cwd="/", start_new_session=True
            )
        except subprocess.TimeoutExpired:
            raise DeadlineExceeded(f"{what} did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).strip()
            message = f"{what} failed (exit {proc.returncode}): {last_lines(out, 6)}"
            if proc.returncode < 0 or environment_failed(None, out) or "Permission denied" in out:
                raise RestoreFailed(message)
            # the copy it works on is ours and was readable: what it refuses is the backup's content
            raise BackupDefect(message, hint="the backup's data or redo log is damaged; take a new backup")

    def _restore_pitr(
        self, src: MariadbPitrSource, binaries: MariaBinaries, server: MariaServer, ctx: StepContext
    ) -> None:
        """Copy, prepare and move the backup into a fresh datadir; the source backup is only read."""
        work = server.root / "work"
        ctx.log.info("copy_backup", source=str(src.backup), to=str(work))
        try:
            shutil.copytree(src.backup, work, symlinks=True)
        except shutil.Error as exc:  # one (src, dst, why) per file: the first and a count, never all of them
            raise RestoreFailed(f"copying the backup to {work} failed: {first_copy_error(exc)}") from None
        except OSError as exc:
            raise RestoreFailed(f"copying the backup to {work} failed: {exc.filename}: {exc.strerror}") from None
        backup = binaries.tool("backup")
        self._run([backup, "--no-defaults", "--prepare", f"--target-dir={work}"], "mariadb-backup --prepare", ctx)
        ctx.mark("backup_prepared", iso(ctx.clock.now()))
        self._run(
            [backup, "--no-defaults", "--move-back", f"--target-dir={work}", f"--datadir={server.datadir}"],
            "mariadb-backup --move-back",
            ctx,
        )
        server.datadir.chmod(0o700)
        chown_tree(server.datadir, self.run_as)

    # ------------------------------------------------------------ waiting & loading

    def await_ready(self, restored: MariaRestored, ctx: StepContext) -> MariaReady:
        """Wait for the socket, replay binlogs / load the dump, create the drill user.

        Safe to call again after a failure: finished phases are not redone.
        """
        server, plan = restored.server, restored.plan
        if self._phase == "started":
            self._wait_accepting(server, ctx, user="root" if self._pitr else None)
            ctx.mark("server_accepting", iso(ctx.clock.now()))
            if isinstance(self.source, MariadbPitrSource) and isinstance(plan, PitrPrepared):
                self._replay(self.source, plan, server, ctx)
                ctx.mark("binlogs_replayed", iso(ctx.clock.now()))
            elif isinstance(self.source, MariadbDumpSource) and isinstance(plan, DumpPrepared):
                self._load_dump(self.source, plan, server, ctx)
                ctx.mark("dump_loaded", iso(ctx.clock.now()))
            else:  # nothing loaded is never "ready"
                raise InfrastructureError(f"{NAME}: restored from a {type(plan).__name__} for this source")
            self._phase = "loaded"
        if self._phase == "loaded":
            self._create_drill_user(server)
            if self.loopback:
                self._restart_on_loopback(server, ctx)
            self._phase = "ready"
        ctx.mark("ready", iso(ctx.clock.now()))
        database = self._database or (self.source.database if self.source else "mysql")
        return MariaReady(server, database, self._replicas_running)

    @property
    def _pitr(self) -> bool:
        return isinstance(self.source, MariadbPitrSource)

    def _wait_accepting(
        self, server: MariaServer, ctx: StepContext, *, user: str | None, password: str | None = None
    ) -> None:
        """Poll the socket on the injected clock until the server answers, it dies, or the deadline passes."""
        import pymysql

        def check() -> tuple[Verdict, None]:
            if not server.running():
                raise RestoreFailed(f"the restored server exited (code {server.exit_code()}): {server.log_tail()}")
            if server.socket.exists():
                try:
                    with contextlib.closing(server.connect(user=user, password=password)) as conn, conn.cursor() as cur:
                        cur.execute("select version()")
                        self._version = str(cur.fetchone()[0])
                        return "ready", None
                except pymysql.err.OperationalError as exc:
                    ctx.log.debug("not_ready", reason=str(exc))
            return "pending", None

        def too_late() -> DeadlineExceeded:
            return DeadlineExceeded(f"the restored server was not ready in time; log: {server.log_tail(5)}")

        poll(ctx.clock, ctx.deadline_ns, check, "the restored server", policy=LOCAL, on_deadline=too_late)

    def _client(self, server: MariaServer, user: str, database: str | None) -> list[str]:
        return client_args(server.bin.tool("client"), server.socket, user, database)

    def _replay(self, src: MariadbPitrSource, prep: PitrPrepared, server: MariaServer, ctx: StepContext) -> None:
        """``mariadb-binlog --verify-binlog-checksum --start-position ... | mariadb``, then prove where it got to.

        The stream passes through a :class:`ReplayTracker` on its way to the client, so the drill
        knows which event of which file mariadb-binlog emitted last, and compares it with what
        preflight found: every file to its end, the last one to exactly the requested stop. A
        time target stops with ``--stop-datetime`` (TZ=UTC), ``latest`` with ``--stop-position`` at
        the end of the last whole event (a live copy's last file may end mid-event).
        """
        plan = prep.plan
        if plan.stop_ts is not None:
            stop = f"--stop-datetime={datetime.fromtimestamp(plan.stop_ts, UTC):%Y-%m-%d %H:%M:%S}"
        else:
            stop = f"--stop-position={plan.stop_position}"
        cmd = [
            prep.binaries.tool("binlog"),
            "--no-defaults",
            "--verify-binlog-checksum",
            f"--start-position={plan.start_position}",
            stop,
            *[str(src.binlogs / n) for n in plan.files],
        ]
        ctx.log.info("replay_binlogs", files=list(plan.files), stop=stop, requested=str(plan.requested))
        timeout = _timeout(ctx)
        tracker = ReplayTracker(plan.files, plan.start_position)
        piped = pipe(cmd, self._client(server, "root", None), tracker, server.log_dir, timeout, run_as=self.run_as)
        self._proof, error = judge_replay(plan, tracker, piped, timeout)
        if error is not None:
            raise error

    def _load_dump(self, src: MariadbDumpSource, prep: DumpPrepared, server: MariaServer, ctx: StepContext) -> None:
        """Stream the dump into the client; a dump that ends early or holds SQL that fails is a BackupDefect."""
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"create database if not exists `{src.database.replace('`', '``')}`")
        timeout = _timeout(ctx)
        client = self._client(server, os_user(), src.database)
        streamed, piped = feed_dump(client, src.dump, prep.dump.gz, server.log_dir / "client.err", timeout)
        self._proof, error = judge_dump(src, prep.dump, streamed, piped, timeout)
        if error is not None:
            raise error
        self._database = streamed.used or src.database

    def _create_drill_user(self, server: MariaServer) -> None:
        """A user with a random in-memory password and read-only rights, for the validators."""
        with contextlib.closing(server.connect(user="root" if self._pitr else None)) as conn, conn.cursor() as cur:
            self._replicas_running = create_drill_user(
                cur, self._user, self._password, loopback=self.loopback, grants_skipped=self._pitr
            )

    def _restart_on_loopback(self, server: MariaServer, ctx: StepContext) -> None:
        """Restart with grants on and 127.0.0.1 only: never listen while grants are skipped."""
        if not server.stop(timeout=_timeout(ctx, floor=10.0)):
            raise RestoreFailed("the restored server did not stop for its restart on 127.0.0.1")
        server.port = self._port
        extra = ["--skip-log-bin"]
        if self._pitr:
            extra += innodb_args(server.root / "work")
        server.start(extra)
        if self._pitr:
            self._wait_accepting(server, ctx, user=self._user, password=self._password.reveal())
        else:
            self._wait_accepting(server, ctx, user=None)

    def _connect_drill(self, server: MariaServer) -> Any:
        return server.connect(user=self._user, password=self._password.reveal())

    # ------------------------------------------------------------ endpoint & facts

    def endpoint(self, ready: MariaReady, ctx: StepContext) -> Endpoint:
        """The drill user over the private socket (port is 0 when the server has no TCP listener)."""
        return Endpoint(
            engine="mysql",
            host="localhost",
            port=ready.server.port or 0,
            database=ready.database,
            user=self._user,
            password=self._password,
            unix_socket=str(ready.server.socket),
        )

    def verify_isolation(self, ready: MariaReady, ctx: StepContext) -> list[Fact]:
        """Read back from the running server as the drill user (``drills.engines.mariadb.isolation``)."""
        with contextlib.closing(self._connect_drill(ready.server)) as conn:
            self._version, facts = read_isolation(
                ready.server,
                conn,
                run_as=self.run_as,
                loopback=self.loopback,
                replicas_running=ready.replicas_running,
                user_name=self._user_name(),
            )
        return require_isolated(facts, "restored MariaDB server is not isolated")

    def recovery_proof(self) -> dict[str, Any] | None:
        """Where the replay (or the dump load) got to against what was asked; None before it ran.

        ``{"requested", "reached", "complete", "detail"}`` plus, for PITR, the stop rule and the
        newest event the binlogs hold. A drill whose proof is not complete has already failed
        with IncompleteRecovery (or BackupDefect for a dump): no validator can pass it.
        """
        return dict(self._proof) if self._proof is not None else None

    def connection_hint(self) -> str | None:
        return None  # the endpoint (socket, port, user, database) is the whole story of a local server

    def target_facts(self) -> dict[str, Any]:
        s = self.server
        return {
            "recovery": self.recovery_proof(),
            "kind": NAME,
            "host": socket.gethostname(),
            "datadir": str(s.datadir) if s else None,
            "socket": str(s.socket) if s else None,
            "port": s.port if s else None,
            "server_version": self._version,
            "server_user": self._user_name(),
            "binlogs_read_from": str(self.source.binlogs) if isinstance(self.source, MariadbPitrSource) else None,
        }

    # ------------------------------------------------------------ teardown

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        result = teardown_server(resource, ctx)
        if self.server is not None and str(self.server.datadir) == resource.id:
            self.server._proc = None
        return result
