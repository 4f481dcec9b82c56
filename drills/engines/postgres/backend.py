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
import os
import re
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backends.base import BackendSettings, Fact, PreflightReport, StepContext, require_isolated
from drills.clock import iso
from drills.engines.postgres.backup import (
    format_lsn,
    inspect_base_backup,
    parse_lsn,
    parse_pg_time,
    verify_base_backup,
)
from drills.engines.postgres.declaration import PostgresDumpSource, PostgresPitrSource
from drills.engines.postgres.isolation import read_isolation
from drills.engines.postgres.plan import PitrPlan, needed_wal, plan_facts, plan_pitr
from drills.engines.postgres.restore_files import copy_base_backup, extract_tar, stage_wal
from drills.engines.postgres.server import (
    PgBinaries,
    PgCluster,
    find_pg_binaries,
    log_errors,
    read_log,
    run_as_for_server,
)
from drills.engines.postgres.steps import DumpPrepared, PgPlan, PgRestored, PitrPrepared
from drills.engines.postgres.teardown import NAME, SERVER_KIND, teardown_server
from drills.engines.postgres.wal import segment_name, split_name
from drills.engines.server_record import server_started
from drills.errors import (
    BackupDefect,
    DeadlineExceeded,
    IncompleteRecovery,
    InfrastructureError,
    RestoreFailed,
)
from drills.osutil import (
    RunAs,
    check_scratch_space,
    chown_tree,
    ensure_reachable,
    free_port,
)
from drills.resources import Resource, TeardownResult
from drills.wait import LOCAL, Verdict, poll
from validators.endpoint import Endpoint

__all__ = ["LocalPostgres", "create"]


def create(source: Any, settings: BackendSettings) -> LocalPostgres:
    return LocalPostgres(source, settings)


def check_backup(source: Any) -> dict[str, Any]:
    """``drill validate``: the checks preflight runs that need no server (manifest, WAL, target range)."""
    if isinstance(source, PostgresPitrSource):
        backup = inspect_base_backup(source.base_backup)
        bins = find_pg_binaries(backup.pg_major)
        verified = verify_base_backup(backup, _optional_tool(bins, "pg_verifybackup"))
        target = source.target_time if isinstance(source.target_time, datetime) else None
        ids = None if os.geteuid() == 0 else (os.geteuid(), os.getgroups())
        plan = plan_pitr(
            backup, source.wal_archive, target, bins.tool("pg_waldump"), server_ids=ids, full=source.verify == "full"
        )
        return {"base_backup": verified, "wal": plan_facts(plan)}
    if isinstance(source, PostgresDumpSource) and not source.archive.exists():
        raise BackupDefect(f"no pg_dump archive at {source.archive}", hint="did the dump job run?")
    return {}


STOP_RE = re.compile(r"recovery stopping before (?:commit|abort) of transaction \d+, time (\d{4}-\d\d-\d\d [\d:.]+)")


def _optional_tool(bins: PgBinaries, name: str) -> str | None:
    path = Path(bins.tool(name))
    return str(path) if path.exists() else None


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


class LocalPostgres:
    """The local PostgreSQL backend; its steps hand on :mod:`drills.engines.postgres.steps` values."""

    name = NAME

    def __init__(self, source: PostgresPitrSource | PostgresDumpSource, settings: BackendSettings) -> None:
        self.source = source
        self.settings = settings
        self._proof: dict[str, Any] | None = None
        self.cluster: PgCluster | None = None  # for the evidence (target_facts); steps get it handed on
        self.run_as: RunAs | None = None
        self.wal_source: Path | None = None
        self._server_version: str | None = None

    # ------------------------------------------------------------ preflight

    def preflight(self, ctx: StepContext) -> PreflightReport[PgPlan]:
        self.run_as = run_as_for_server()
        if self.run_as is not None:
            ctx.log.info("server_user", user=self.run_as.name, reason="PostgreSQL refuses to run as root")
        if isinstance(self.source, PostgresPitrSource):
            return self._preflight_pitr(self.source)
        return self._preflight_dump(self.source)

    def _preflight_pitr(self, src: PostgresPitrSource) -> PreflightReport[PgPlan]:
        backup = inspect_base_backup(src.base_backup)
        binaries = find_pg_binaries(backup.pg_major)
        verified = verify_base_backup(backup, _optional_tool(binaries, "pg_verifybackup"))
        target = src.target_time if isinstance(src.target_time, datetime) else None
        # as root the server's user reads the WAL (or a private copy when it cannot); else this process does
        ids = None if self.run_as is not None else (os.geteuid(), os.getgroups())
        plan = plan_pitr(
            backup, src.wal_archive, target, binaries.tool("pg_waldump"), server_ids=ids, full=src.verify == "full"
        )
        self._check_space(backup.expanded_bytes + plan.wal_bytes_needed)
        last = plan.expected_last_commit
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
                    "end_time": iso(plan.backup_end) if plan.backup_end_lsn else None,
                    "end_lsn": plan.backup_end_lsn,
                    "timeline": backup.label.get("START TIMELINE"),
                    "verification": verified,
                },
                "wal_archive": {
                    "path": str(src.wal_archive),
                    "verification": "full (page headers and pg_waldump records)"
                    if src.verify == "full"
                    else "page headers of every needed segment",
                    **plan_facts(plan),
                },
                "target_time": iso(target) if target else "latest",
                "earliest_restorable_time": iso(plan.backup_end),
                "latest_restorable_time": iso(last.at) if last and target is None else None,
                "last_archived_commit": iso(last.at) if last and target is None else None,
            },
            plan=PitrPrepared(binaries, backup, plan),
            facts={"server_binaries": str(binaries.bindir), "server_user": self._user_name()},
        )

    def _check_space(self, needed: int) -> None:
        """Refuse up front when the scratch filesystem cannot hold the restore (with a margin for the server)."""
        ensure_reachable(self.settings.run_dir, self.run_as)
        check_scratch_space(self.settings.run_dir.parent, needed, "backup and WAL")

    def _preflight_dump(self, src: PostgresDumpSource) -> PreflightReport[PgPlan]:
        check_backup(src)
        binaries = find_pg_binaries()
        proc = subprocess.run(
            [binaries.tool("pg_restore"), "--list", str(src.archive)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"TZ": "UTC", "LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
        if proc.returncode != 0:
            raise BackupDefect(f"{src.archive}: not a readable pg_dump archive: {proc.stderr.strip()[-300:]}")
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
            plan=DumpPrepared(binaries),
            facts={"server_binaries": str(binaries.bindir), "server_user": self._user_name()},
        )

    def _user_name(self) -> str:
        return self.run_as.name if self.run_as else getpass.getuser()

    # ------------------------------------------------------------ restore

    def _new_cluster(self, ctx: StepContext, binaries: PgBinaries) -> PgCluster:
        root = self.settings.run_dir / "pg"
        cluster = PgCluster(binaries, root / "data", root / "sock", free_port(), self.run_as, root / "server.log")
        resource = Resource(
            kind=SERVER_KIND,
            id=str(cluster.datadir),
            backend=NAME,
            attrs={
                "root": str(root),
                "datadir": str(cluster.datadir),
                "socket_dir": str(cluster.socket_dir),
                "port": cluster.port,
                "bindir": str(binaries.bindir),
                "major": binaries.major,
                "run_as": self.run_as.name if self.run_as else None,
            },
        )
        ctx.register(resource)
        # journaled again the moment the postmaster exists: teardown signals only that process
        cluster.on_started = lambda ident: ctx.register(server_started(resource, ident))
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        self.cluster = cluster
        return cluster

    def restore(self, plan: PgPlan, ctx: StepContext) -> PgRestored:
        if isinstance(self.source, PostgresPitrSource) and isinstance(plan, PitrPrepared):
            return self._restore_pitr(self.source, plan, ctx)
        if isinstance(self.source, PostgresDumpSource) and isinstance(plan, DumpPrepared):
            return self._restore_dump(self.source, plan, ctx)
        raise InfrastructureError(f"{self.name}: preflight planned a {type(plan).__name__} for this source")

    def _restore_pitr(self, src: PostgresPitrSource, prep: PitrPrepared, ctx: StepContext) -> PgRestored:
        cluster = self._new_cluster(ctx, prep.binaries)
        data = cluster.datadir
        ctx.mark("restore_requested", iso(ctx.clock.now()))
        if prep.backup.format == "plain":
            copy_base_backup(src.base_backup, data)
        else:
            extract_tar(prep.backup.tar_path, data)
            wal_tar = src.base_backup / f"pg_wal.{prep.backup.format}"
            if wal_tar.exists():
                extract_tar(wal_tar, data / "pg_wal")
        (data / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (data / stale).unlink(missing_ok=True)
        if not (data / "postgresql.conf").exists():
            (data / "postgresql.conf").write_text(
                "# restored by restore-drills: the source kept its config elsewhere\n"
            )
        self.wal_source = stage_wal(src.wal_archive, needed_wal(prep.plan), cluster.datadir.parent, self.run_as)
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
        return PgRestored(cluster, prep.plan)

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

    def _restore_dump(self, src: PostgresDumpSource, prep: DumpPrepared, ctx: StepContext) -> PgRestored:
        cluster = self._new_cluster(ctx, prep.binaries)
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
            [prep.binaries.tool("createdb"), *base, src.database], capture_output=True, text=True, check=False
        )
        if created.returncode != 0:
            raise RestoreFailed(f"createdb {src.database} failed: {created.stderr.strip()}")
        proc = subprocess.run(
            [
                prep.binaries.tool("pg_restore"),
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
        return PgRestored(cluster)

    # ------------------------------------------------------------ waiting

    def await_ready(self, restored: PgRestored, ctx: StepContext) -> PgRestored:
        """Poll until the server accepts connections and has left recovery; then prove where recovery stopped."""
        import psycopg

        cluster, recovery = restored.cluster, restored.recovery
        user = self.source.user

        def check() -> tuple[Verdict, None]:
            if not cluster.running():
                self._stopped_during_recovery(cluster)
            try:
                with psycopg.connect(cluster.conninfo("postgres", user), connect_timeout=5, autocommit=True) as conn:
                    row = conn.execute(
                        "select pg_is_in_recovery(), version(), pg_last_wal_replay_lsn()::text, "
                        "pg_last_xact_replay_timestamp()"
                    ).fetchone()
                    if row is not None and not row[0]:
                        self._server_version = str(row[1])
                        ctx.mark("server_ready", iso(ctx.clock.now()))
                        if recovery is not None:
                            self._prove_recovery(recovery, row[2], row[3], cluster)
                        return "ready", None
            except psycopg.OperationalError as exc:
                if not cluster.running():
                    self._stopped_during_recovery(cluster)
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                ctx.log.debug("not_ready", reason=last)
            return "pending", None

        def too_late() -> DeadlineExceeded:
            log = log_errors(cluster.logfile) or cluster.log_tail(3)
            return DeadlineExceeded("the restored server was not ready in time; log: " + log)

        # a starting server refuses at once: polling often is cheap
        poll(ctx.clock, ctx.deadline_ns, check, "the restored server", policy=LOCAL, on_deadline=too_late)
        return restored

    def _stopped_during_recovery(self, cluster: PgCluster) -> None:
        errors = log_errors(cluster.logfile)
        if "recovery ended before configured recovery target was reached" in errors:
            self._proof = {"complete": False, "detail": errors}
            raise IncompleteRecovery(
                f"recovery ran out of WAL before reaching target_time: {errors}",
                hint="the WAL is damaged where its page headers look valid; `verify: full` finds this before restoring",
            )
        raise RestoreFailed(f"the restored server stopped during recovery: {errors or cluster.log_tail(3)}")

    def _prove_recovery(
        self, plan: PitrPlan, replay_lsn: str | None, replay_ts: datetime | None, cluster: PgCluster
    ) -> None:
        """Recovery reached exactly what the archive holds for this target, or the drill fails here.

        A ``latest`` restore over a damaged archive promotes silently wherever WAL stops being
        readable; a time target stops before the first commit after it. Both are checked
        against what preflight read from the archive (:class:`PitrPlan`).
        """
        reached = parse_lsn(replay_lsn) if replay_lsn else None
        log = read_log(cluster.logfile)
        stop = STOP_RE.search(log)
        stopped_at = parse_pg_time(stop.group(1)) if stop else None
        expected = plan.expected_last_commit
        problems: list[str] = []
        if expected is not None and (replay_ts is None or replay_ts != expected.at):
            problems.append(
                f"the newest replayed transaction is {iso(replay_ts) if replay_ts else 'none'}, "
                f"the archive holds one at {iso(expected.at)} ({format_lsn(expected.lsn)})"
            )
        if plan.target is None:
            need = plan.last_record_lsn
            if need is not None and (reached is None or reached <= need):
                seg = plan.geometry.segment_size
                tli, _ = split_name(plan.first_segment, plan.geometry.segments_per_id)
                first_lost = segment_name(tli, (reached or 0) // seg, plan.geometry.segments_per_id)
                problems.append(
                    f"recovery ended at {replay_lsn}, before the archive's last record at {format_lsn(need)}: "
                    f"segments {first_lost}..{plan.last_needed_segment} were never fully replayed"
                )
        else:
            after = plan.first_commit_after_target
            if after is not None and stopped_at != after.at:
                problems.append(
                    f"recovery did not stop at the first commit after the target ({iso(after.at)}); "
                    + (f"it stopped before one at {iso(stopped_at)}" if stopped_at else "no recovery stop was logged")
                )
        self._proof = {
            "requested": "latest" if plan.target is None else iso(plan.target),
            "replayed_until_lsn": replay_lsn,
            "newest_replayed_transaction_at": iso(replay_ts) if replay_ts else None,
            "stopped_before_commit_at": iso(stopped_at) if stopped_at else None,
            "expected_last_transaction": {"lsn": format_lsn(expected.lsn), "at": iso(expected.at)}
            if expected
            else None,
            "expected_last_record_lsn": format_lsn(plan.last_record_lsn) if plan.last_record_lsn is not None else None,
            "complete": not problems,
            "detail": "; ".join(problems) or "recovery reached exactly what the archive holds for this target",
        }
        if problems:
            raise IncompleteRecovery(
                "recovery ended early: " + "; ".join(problems),
                hint="the WAL after the stop was never replayed: the archive is damaged where page headers look valid",
            )

    def recovery_proof(self) -> dict[str, Any] | None:
        return self._proof

    # ------------------------------------------------------------ endpoint & facts

    def endpoint(self, ready: PgRestored, ctx: StepContext) -> Endpoint:
        """The superuser over the private socket, marked admin: the drill makes the validators' reader with it."""
        return Endpoint(
            engine="postgres",
            host=str(ready.cluster.socket_dir),
            port=ready.cluster.port,
            database=self.source.database,
            user=self.source.user,
            admin=True,
        )

    def verify_isolation(self, ready: PgRestored, ctx: StepContext) -> list[Fact]:
        """Read back from the running server over its socket (``drills.engines.postgres.isolation``)."""
        facts = read_isolation(ready.cluster, self.source.user, self._user_name())
        return require_isolated(facts, "restored server is not isolated")

    def connection_hint(self) -> str | None:
        return None  # the endpoint (socket, port, user, database) is the whole story of a local server

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
