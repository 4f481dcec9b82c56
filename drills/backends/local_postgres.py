"""Local PostgreSQL backend: PITR from a base backup + WAL archive, or a pg_dump
archive, into a throwaway server that only this drill can reach.

Isolation: the restored server listens on no TCP address at all
(``listen_addresses=''``); its only door is a Unix socket in a 0700 directory
owned by the server's user, and ``pg_hba.conf`` is replaced by a single
``local`` line. ``archive_mode`` is forced off and ``primary_conninfo``
cleared so the restored server can never write into the production archive
or follow a primary. Each of these is read back from the running server and
recorded as an isolation fact.
"""

from __future__ import annotations

import contextlib
import getpass
import pwd
import shutil
import socket
import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backends.base import BackendSettings, PreflightReport, StepContext
from drills.backends.pg_backup import (
    BaseBackup,
    WalArchive,
    inspect_base_backup,
    inspect_wal_archive,
    missing_segments,
    newest_commit_in_archive,
    parse_pg_time,
)
from drills.clock import iso
from drills.errors import (
    DeadlineExceeded,
    InfrastructureError,
    IsolationError,
    PreflightError,
    RestoreFailed,
    TeardownError,
)
from drills.localpg import PgBinaries, PgCluster, RunAs, chown_tree, find_pg_binaries, free_port, run_as_for_server
from drills.resources import Resource, TeardownResult
from drills.sources import PostgresDumpSource, PostgresPitrSource
from validators.endpoint import Endpoint

__all__ = ["LocalPostgres", "create"]

NAME = "local-postgres"
SERVER_KIND = "postgres-server"


def create(source: Any, settings: BackendSettings) -> LocalPostgres:
    return LocalPostgres(source, settings)


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


class LocalPostgres:
    name = NAME

    def __init__(self, source: PostgresPitrSource | PostgresDumpSource, settings: BackendSettings) -> None:
        self.source = source
        self.settings = settings
        self.binaries: PgBinaries | None = None
        self.backup: BaseBackup | None = None
        self.archive: WalArchive | None = None
        self.cluster: PgCluster | None = None
        self.run_as: RunAs | None = None
        self.wal_source: Path | None = None
        self._isolation: list[dict[str, Any]] = []
        self._server_version: str | None = None

    # ------------------------------------------------------------ preflight

    def preflight(self, ctx: StepContext) -> PreflightReport:
        self.run_as = run_as_for_server()
        if self.run_as is not None:
            ctx.log.info("server_user", user=self.run_as.name, reason="PostgreSQL refuses to run as root")
        if isinstance(self.source, PostgresPitrSource):
            return self._preflight_pitr(self.source)
        return self._preflight_dump(self.source)

    def _preflight_pitr(self, src: PostgresPitrSource) -> PreflightReport:
        backup = inspect_base_backup(src.base_backup)
        self.binaries = find_pg_binaries(backup.pg_major)
        archive = inspect_wal_archive(src.wal_archive, backup)
        start = backup.start_segment
        if not archive.segments:
            raise PreflightError(f"{src.wal_archive}: the WAL archive holds no WAL segments")
        gaps = missing_segments(archive.segments, start)
        if gaps:
            shown = ", ".join(gaps[:5]) + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else "")
            raise PreflightError(
                f"WAL archive {src.wal_archive} is missing segments needed after the base backup: {shown}",
                hint="recovery cannot replay past a gap; check archive_command on the source",
            )
        backup_end = archive.stop_time or backup.start_time
        newest = newest_commit_in_archive(self.binaries.tool("pg_waldump"), archive)
        target = src.target_time
        if isinstance(target, datetime):
            if target < backup_end:
                raise PreflightError(
                    f"target_time {iso(target)} is before the end of the base backup ({iso(backup_end)})",
                    hint="choose a later target, or an older base backup",
                )
            if newest is None or target > newest:
                last = iso(newest) if newest else "none found"
                raise PreflightError(
                    f"target_time {iso(target)} is after the last archived commit ({last}); "
                    "recovery would end before reaching it",
                    hint="choose an earlier target, `latest`, or wait until the WAL is archived",
                )
        self.backup, self.archive = backup, archive
        return PreflightReport(
            source={"engine": "postgres", "version": str(backup.pg_major), "identifier": str(src.base_backup)},
            recovery_point={
                "kind": "pitr",
                "base_backup": {
                    "path": str(src.base_backup),
                    "format": backup.format,
                    "size_bytes": backup.size_bytes,
                    "label": backup.label.get("LABEL"),
                    "start_lsn": backup.label.get("START WAL LOCATION", "").split(" ")[0],
                    "start_time": iso(backup.start_time),
                    "end_time": iso(backup_end) if archive.stop_time else None,
                    "end_lsn": archive.stop_lsn,
                    "timeline": backup.label.get("START TIMELINE"),
                },
                "wal_archive": {
                    "path": str(src.wal_archive),
                    "segments": len(archive.segments),
                    "first_segment": start,
                    "last_segment": archive.segments[-1],
                    "size_bytes": archive.size_bytes,
                },
                "target_time": iso(target) if isinstance(target, datetime) else "latest",
                "earliest_restorable_time": iso(backup_end),
                "latest_restorable_time": iso(newest) if newest else None,
            },
            facts={"server_binaries": str(self.binaries.bindir), "server_user": self._user_name()},
        )

    def _preflight_dump(self, src: PostgresDumpSource) -> PreflightReport:
        self.binaries = find_pg_binaries()
        proc = subprocess.run(
            [self.binaries.tool("pg_restore"), "--list", str(src.archive)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"TZ": "UTC", "LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
        if proc.returncode != 0:
            raise PreflightError(f"{src.archive}: not a readable pg_dump archive: {proc.stderr.strip()[-300:]}")
        created = src.taken_at
        for line in proc.stdout.splitlines():
            if line.startswith("; Archive created at ") and created is None:
                with contextlib.suppress(ValueError):
                    created = parse_pg_time(line.split("at ", 1)[1].strip())
        entries = sum(1 for line in proc.stdout.splitlines() if line and not line.startswith(";"))
        size = (
            sum(p.stat().st_size for p in src.archive.rglob("*"))
            if src.archive.is_dir()
            else src.archive.stat().st_size
        )
        self._dump_created = created
        return PreflightReport(
            source={"engine": "postgres", "identifier": str(src.archive)},
            recovery_point={
                "kind": "dump",
                "archive": str(src.archive),
                "size_bytes": size,
                "toc_entries": entries,
                "created_at": iso(created) if created else None,
            },
            facts={"server_binaries": str(self.binaries.bindir), "server_user": self._user_name()},
        )

    def _user_name(self) -> str:
        return self.run_as.name if self.run_as else getpass.getuser()

    # ------------------------------------------------------------ restore

    def _new_cluster(self, ctx: StepContext) -> PgCluster:
        assert self.binaries is not None
        root = self.settings.run_dir / "pg"
        cluster = PgCluster(self.binaries, root / "data", root / "sock", free_port(), self.run_as, root / "server.log")
        ctx.register(
            Resource(
                kind=SERVER_KIND,
                id=str(cluster.datadir),
                backend=NAME,
                attrs={
                    "root": str(root),
                    "datadir": str(cluster.datadir),
                    "socket_dir": str(cluster.socket_dir),
                    "port": cluster.port,
                    "bindir": str(self.binaries.bindir),
                    "major": self.binaries.major,
                    "run_as": self.run_as.name if self.run_as else None,
                },
            )
        )
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.cluster = cluster
        return cluster

    def restore(self, ctx: StepContext) -> None:
        if isinstance(self.source, PostgresPitrSource):
            self._restore_pitr(self.source, ctx)
        else:
            self._restore_dump(self.source, ctx)

    def _stage_wal(self, archive: Path, root: Path) -> Path:
        """The archive itself when the server's user can read it, else a private copy."""
        if self.run_as is None:
            return archive
        probe = subprocess.run(
            ["test", "-r", str(archive), "-a", "-x", str(archive)],
            user=self.run_as.uid,
            group=self.run_as.gid,
            extra_groups=[],
            check=False,
        )
        if probe.returncode == 0:
            return archive
        staged = root / "wal"
        shutil.copytree(archive, staged)
        chown_tree(staged, self.run_as)
        return staged

    def _restore_pitr(self, src: PostgresPitrSource, ctx: StepContext) -> None:
        assert self.backup is not None
        cluster = self._new_cluster(ctx)
        data = cluster.datadir
        ctx.mark("restore_requested", iso(ctx.clock.now()))
        if self.backup.format == "plain":
            shutil.copytree(src.base_backup, data, symlinks=True)
        else:
            data.mkdir(parents=True)
            for tar_name in (f"base.{self.backup.format}", f"pg_wal.{self.backup.format}"):
                tar_path = src.base_backup / tar_name
                if tar_path.exists():
                    dest = data if tar_name.startswith("base") else data / "pg_wal"
                    dest.mkdir(exist_ok=True)
                    with tarfile.open(tar_path) as tar:
                        tar.extractall(dest, filter="data")
        (data / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (data / stale).unlink(missing_ok=True)
        if not (data / "postgresql.conf").exists():
            (data / "postgresql.conf").write_text(
                "# restored by restore-drills: the source kept its config elsewhere\n"
            )
        self.wal_source = self._stage_wal(src.wal_archive, cluster.datadir.parent)
        settings = {
            "restore_command": f"cp {self.wal_source}/%f %p",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "current",
            **self._isolating_settings(cluster),
        }
        if isinstance(src.target_time, datetime):
            settings["recovery_target_time"] = src.target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        with (data / "postgresql.auto.conf").open("a") as fh:
            fh.write("\n# --- restore-drills: recovery and isolation (overrides everything above)\n")
            for k, v in settings.items():
                fh.write(f"{k} = {_quote(v)}\n")
        (data / "pg_hba.conf").write_text("# restore-drills: only the private socket\nlocal all all trust\n")
        (data / "recovery.signal").touch()
        data.chmod(0o700)
        chown_tree(data, self.run_as)
        cluster.start(wait=False)

    def _isolating_settings(self, cluster: PgCluster) -> dict[str, str]:
        return {
            "listen_addresses": "",
            "unix_socket_directories": str(cluster.socket_dir),
            "unix_socket_permissions": "0700",
            "port": str(cluster.port),
            "archive_mode": "off",
            "archive_command": "",
            "primary_conninfo": "",
            "hot_standby": "off",
            "hba_file": str(cluster.datadir / "pg_hba.conf"),
            "ident_file": str(cluster.datadir / "pg_ident.conf"),
            "logging_collector": "off",
        }

    def _restore_dump(self, src: PostgresDumpSource, ctx: StepContext) -> None:
        cluster = self._new_cluster(ctx)
        assert self.binaries is not None
        ctx.mark("restore_requested", iso(ctx.clock.now()))
        cluster.initdb(superuser=src.user)
        (cluster.datadir / "pg_ident.conf").touch()
        with (cluster.datadir / "postgresql.auto.conf").open("a") as fh:
            for k, v in self._isolating_settings(cluster).items():
                fh.write(f"{k} = {_quote(v)}\n")
        (cluster.datadir / "pg_hba.conf").write_text("local all all trust\n")
        chown_tree(cluster.datadir, self.run_as)
        cluster.start(wait=True, timeout=max(5.0, ctx.remaining_seconds()))
        base = ["-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", src.user]
        created = subprocess.run(
            [self.binaries.tool("createdb"), *base, src.database], capture_output=True, text=True, check=False
        )
        if created.returncode != 0:
            raise RestoreFailed(f"createdb {src.database} failed: {created.stderr.strip()}")
        proc = subprocess.run(
            [
                self.binaries.tool("pg_restore"),
                *base,
                "-d",
                src.database,
                "--jobs",
                str(src.jobs),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                str(src.archive),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=max(5.0, ctx.remaining_seconds()),
        )
        if proc.returncode != 0:
            raise RestoreFailed(f"pg_restore failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")

    # ------------------------------------------------------------ waiting

    def await_ready(self, ctx: StepContext) -> None:
        """Poll until the server accepts connections and has left recovery."""
        import psycopg

        assert self.cluster is not None
        cluster, delay = self.cluster, 0.01
        user = self.source.user
        while True:
            if not cluster.running():
                raise RestoreFailed(f"the restored server stopped during recovery: {cluster.log_tail()}")
            try:
                with psycopg.connect(cluster.conninfo("postgres", user), connect_timeout=5, autocommit=True) as conn:
                    row = conn.execute("select pg_is_in_recovery(), version()").fetchone()
                    if row is not None and not row[0]:
                        self._server_version = str(row[1])
                        ctx.mark("server_ready", iso(ctx.clock.now()))
                        return
            except psycopg.OperationalError as exc:
                if not cluster.running():
                    raise RestoreFailed(f"the restored server stopped: {cluster.log_tail()}") from None
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                ctx.log.debug("not_ready", reason=last)
            if ctx.remaining_seconds() <= 0:
                raise DeadlineExceeded(f"the restored server was not ready in time; log: {cluster.log_tail(5)}")
            ctx.clock.sleep(min(delay, ctx.remaining_seconds()))
            delay = min(delay * 1.5, 0.05)  # a starting server refuses at once: polling often is cheap

    # ------------------------------------------------------------ endpoint & facts

    def endpoint(self, ctx: StepContext) -> Endpoint:
        assert self.cluster is not None
        ep = Endpoint(
            engine="postgres",
            host=str(self.cluster.socket_dir),
            port=self.cluster.port,
            database=self.source.database,
            user=self.source.user,
        )
        self._isolation = self._read_isolation()
        return ep

    def _read_isolation(self) -> list[dict[str, Any]]:
        import psycopg

        assert self.cluster is not None
        c = self.cluster
        with psycopg.connect(c.conninfo("postgres", self.source.user), autocommit=True) as conn:
            settings: dict[str, str] = dict(
                conn.execute(
                    "select name, setting from pg_settings where name in "
                    "('listen_addresses','unix_socket_directories','unix_socket_permissions',"
                    "'archive_mode','primary_conninfo','port')"
                ).fetchall()
            )
            hba = [str(r[0]) for r in conn.execute("select type from pg_hba_file_rules where error is null").fetchall()]
        mode = oct(c.socket_dir.stat().st_mode & 0o777)
        facts: list[dict[str, Any]] = [
            {
                "check": "listen_addresses",
                "subject": "restored server",
                "value": settings.get("listen_addresses", "?"),
                "passed": settings.get("listen_addresses", "x") == "",
                "detail": "no TCP listener: reachable only through the private socket",
            },
            {
                "check": "socket_directory_private",
                "subject": str(c.socket_dir),
                "value": mode,
                "passed": mode == "0o700",
                "detail": f"owned by {self._user_name()}",
            },
            {
                "check": "hba_local_only",
                "subject": "pg_hba.conf",
                "value": hba,
                "passed": bool(hba) and all(t == "local" for t in hba),
                "detail": "only local (socket) connections are accepted",
            },
            {
                "check": "archive_mode_off",
                "subject": "restored server",
                "value": settings.get("archive_mode"),
                "passed": settings.get("archive_mode") == "off",
                "detail": "the restored server never writes into the source's WAL archive",
            },
            {
                "check": "no_primary_conninfo",
                "subject": "restored server",
                "value": "set" if settings.get("primary_conninfo") else "",
                "passed": not settings.get("primary_conninfo"),
                "detail": "the restored server follows no primary",
            },
        ]
        bad = [f for f in facts if not f["passed"]]
        if bad:
            raise IsolationError("restored server is not isolated: " + ", ".join(f["check"] for f in bad))
        return facts

    def isolation_facts(self) -> list[dict[str, Any]]:
        return list(self._isolation)

    def target_facts(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "kind": "local-postgres",
            "host": socket.gethostname(),
            "datadir": str(c.datadir) if c else None,
            "socket_dir": str(c.socket_dir) if c else None,
            "port": c.port if c else None,
            "server_version": self._server_version,
            "server_user": self._user_name(),
            "wal_read_from": str(self.wal_source) if self.wal_source else None,
        }

    # ------------------------------------------------------------ teardown

    def teardown(self, resource: Resource, ctx: StepContext) -> TeardownResult:
        return teardown_server(resource, ctx)


def teardown_server(resource: Resource, ctx: StepContext) -> TeardownResult:
    """Stop the server and remove its directory, from the journaled record alone."""
    if resource.kind != SERVER_KIND or resource.backend != NAME:
        raise TeardownError(f"local-postgres does not own {resource.kind} {resource.id}")
    a = resource.attrs
    root = Path(a["root"])
    if root.name != "pg" or Path(a["datadir"]).parent != root:
        raise TeardownError(f"refusing to remove {root}: not a directory this tool laid out")
    bins = PgBinaries(Path(a["bindir"]), int(a["major"]))
    run_as = None
    if a.get("run_as"):
        pw = pwd.getpwnam(a["run_as"])
        run_as = RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(bins, Path(a["datadir"]), Path(a["socket_dir"]), int(a["port"]), run_as, root / "server.log")
    pid = cluster.pid()
    try:
        stopped = cluster.stop()
    except InfrastructureError as exc:
        stopped = False
        ctx.log.warning("stop_failed", error=str(exc))
    if not stopped:
        return TeardownResult(resource, deleted=False, detail=f"server process {pid} still running")
    shutil.rmtree(root, ignore_errors=True)
    for _ in range(20):
        if not root.exists():
            break
        time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)
    if root.exists():
        return TeardownResult(resource, deleted=False, detail=f"{root} could not be removed")
    detail = f"server (pid {pid}) stopped; {root} removed" if pid else f"no server running; {root} removed"
    return TeardownResult(resource, deleted=True, detail=detail, verified_at=iso(ctx.clock.now()))
