"""pgBackRest backend: drill a stanza of a pgBackRest repository into a throwaway local server.

Built on :class:`~drills.engines.postgres.backend.LocalPostgres` (subclassed, not copied): the
same scratch server, isolation (no TCP, private socket, ``archive_mode=off``), completeness
proof after recovery (``recovery_proof``, :class:`~drills.errors.IncompleteRecovery`) and
teardown. What differs is where the base backup and the WAL come from:

- preflight reads ``pgbackrest info --output=json``: the backup sets, the WAL archive's min/max,
  and picks the newest set that ended before the target (or the named ``set``); a target before
  every set is a :class:`~drills.errors.BackupDefect`. ``verify: true`` runs ``pgbackrest verify``.
- restore runs ``pgbackrest restore`` into the scratch data directory, then fetches the WAL
  from the set's start through the archive's newest segment with ``pgbackrest archive-get``
  into a private copy, and checks that copy exactly as a ``postgres-pitr`` archive is checked
  (page headers, gaps, the commits around the target: :func:`~drills.engines.postgres.plan.plan_pitr`).
  Recovery reads that verified copy, so what is replayed is what was checked.

The repository is only ever read: ``info``, ``verify``, ``restore`` and ``archive-get`` do not
write to it, the drill's own lock and log paths are in its scratch directory, and the restored
server has ``archive_mode=off`` with an ``archive_command`` that fails, so it can never push WAL.
``tests/functional/test_pgbackrest.py`` hashes every file of the repository before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backends.base import BackendSettings, PreflightReport, StepContext
from drills.clock import SystemClock, iso
from drills.engines.postgres.backend import LocalPostgres, _quote
from drills.engines.postgres.backup import BaseBackup, inspect_base_backup, parse_lsn
from drills.engines.postgres.pgbackrest_declaration import PgbackrestSource
from drills.engines.postgres.plan import plan_facts, plan_pitr
from drills.engines.postgres.server import PgCluster, find_pg_binaries, run_as_for_server
from drills.engines.postgres.steps import PgPlan, PgRestored, planned
from drills.engines.postgres.wal import SegmentDefect, geometry_of, segment_name, span_bytes, split_name
from drills.errors import BackupDefect, PreflightError, RestoreFailed
from drills.osutil import chown_tree, private_dir

__all__ = ["BackupSet", "Pgbackrest", "StanzaInfo", "check_backup", "choose_set", "create", "parse_info", "wal_names"]

NAME = "pgbackrest"
TOOL = "pgbackrest"
# the drill's environment for pgbackrest: its own PGBACKREST_* variables (secrets live there), nothing else
_ENV_KEEP = ("PATH", "HOME", "TMPDIR")
# pgBackRest's exit codes (src/common/error/error.yaml): config and option errors are the runbook's (exit 2) ...
OPTION_ERRORS = frozenset({27, 30, 31, 32, 33, 34, 35, 36, 37, 38})
# ... checksum, file-invalid, format (a damaged compressed file), file-missing are the backup's (exit 1)
DAMAGE_ERRORS = frozenset({26, 28, 29, 55})


def create(source: Any, settings: BackendSettings) -> Pgbackrest:
    return Pgbackrest(source, settings)


def check_backup(source: PgbackrestSource) -> dict[str, Any]:
    """``drill validate``: what preflight checks without a server (stanza, set for the target, WAL range, verify)."""
    with tempfile.TemporaryDirectory(prefix="restore-drill-validate-") as d:
        b = Pgbackrest(source, BackendSettings(run_id="validate", run_dir=Path(d) / "run", clock=SystemClock()))
        info, chosen, _ = b.inspect_repository(600)
        verified = b._verify(600) if source.verify else None
    return {
        "tool": b.tool_version,
        "backup_set": chosen.facts(),
        "wal_archive": {"archive_min": info.wal_min, "archive_max": info.wal_max},
        "repository_verify": verified,
    }


# ------------------------------------------------------------------ pure: what `info` says


@dataclass(frozen=True)
class BackupSet:
    label: str
    type: str  # full | diff | incr
    start: datetime
    stop: datetime
    lsn_start: str
    lsn_stop: str
    wal_start: str
    wal_stop: str
    size_bytes: int  # the database once restored
    delta_bytes: int
    repo_size_bytes: int  # the set in the repository (compressed)
    repo_delta_bytes: int
    prior: str | None
    error: bool  # pgBackRest found page checksum errors while backing up

    def facts(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "type": self.type,
            "prior": self.prior,
            "start_time": iso(self.start),
            "stop_time": iso(self.stop),
            "lsn_start": self.lsn_start,
            "lsn_stop": self.lsn_stop,
            "wal_start": self.wal_start,
            "wal_stop": self.wal_stop,
            "size_bytes": self.size_bytes,
            "delta_bytes": self.delta_bytes,
            "repository_size_bytes": self.repo_size_bytes,
            "repository_delta_bytes": self.repo_delta_bytes,
        }


@dataclass(frozen=True)
class StanzaInfo:
    name: str
    status: str
    pg_version: str | None
    system_id: int | None
    sets: list[BackupSet]  # oldest first, of the current database only
    wal_min: str | None
    wal_max: str | None


def _ts(epoch: Any) -> datetime:
    return datetime.fromtimestamp(int(epoch), UTC)


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """The stanza's entry of ``pgbackrest info --output=json``; a stanza in error is a BackupDefect."""
    try:
        doc = json.loads(text)
        entry = next(s for s in doc if s.get("name") == stanza)
    except (ValueError, StopIteration, AttributeError, TypeError):
        raise BackupDefect(
            f"pgbackrest info has no stanza {stanza!r}", hint="check the stanza name and repository"
        ) from None
    status = entry.get("status") or {}
    if status.get("code", 0) != 0:
        raise BackupDefect(
            f"stanza {stanza!r}: {status.get('message', 'status ' + str(status.get('code')))}",
            hint="pgBackRest cannot read this stanza's backups: did the backup job run against this repository?",
        )
    dbs = entry.get("db") or []
    current = dbs[-1] if dbs else {}
    db_id = current.get("id")
    sets = []
    for b in entry.get("backup") or []:
        if (b.get("database") or {}).get("id", db_id) != db_id:
            continue  # a set of an older cluster (before a stanza-upgrade)
        info, repo = b.get("info") or {}, (b.get("info") or {}).get("repository") or {}
        sets.append(
            BackupSet(
                label=str(b["label"]),
                type=str(b.get("type", "?")),
                start=_ts(b["timestamp"]["start"]),
                stop=_ts(b["timestamp"]["stop"]),
                lsn_start=str((b.get("lsn") or {}).get("start", "")),
                lsn_stop=str((b.get("lsn") or {}).get("stop", "")),
                wal_start=str((b.get("archive") or {}).get("start", "")),
                wal_stop=str((b.get("archive") or {}).get("stop", "")),
                size_bytes=int(info.get("size", 0)),
                delta_bytes=int(info.get("delta", 0)),
                repo_size_bytes=int(repo.get("size", 0)),
                repo_delta_bytes=int(repo.get("delta", 0)),
                prior=b.get("prior"),
                error=bool(b.get("error", False)),
            )
        )
    sets.sort(key=lambda s: (s.stop, s.label))
    arch = [a for a in entry.get("archive") or [] if (a.get("database") or {}).get("id", db_id) == db_id]
    return StanzaInfo(
        name=stanza,
        status=str(status.get("message", "ok")),
        pg_version=str(current["version"]) if "version" in current else None,
        system_id=int(current["system-id"]) if "system-id" in current else None,
        sets=sets,
        wal_min=arch[-1].get("min") if arch else None,
        wal_max=arch[-1].get("max") if arch else None,
    )


def choose_set(info: StanzaInfo, target: datetime | None, label: str | None) -> BackupSet:
    """The named set, or the newest set that ended at or before the target (``latest``: the newest)."""
    usable = [s for s in info.sets if not s.error]
    if label is not None:
        named = next((s for s in info.sets if s.label == label), None)
        if named is None:
            raise BackupDefect(
                f"stanza {info.name!r} has no backup set {label!r}",
                hint="sets in the repository: " + (", ".join(s.label for s in info.sets) or "none"),
            )
        if named.error:
            raise BackupDefect(f"backup set {label}: pgBackRest recorded page checksum errors while taking it")
        if target is not None and named.stop > target:
            raise BackupDefect(
                f"target_time {iso(target)} is before the end of backup set {label} ({iso(named.stop)})",
                hint="choose a later target or an older set",
            )
        return named
    if not usable:
        raise BackupDefect(
            f"stanza {info.name!r} holds no usable backup set"
            + (f" ({len(info.sets)} with page checksum errors)" if info.sets else ""),
            hint="did the backup job run against this repository?",
        )
    if target is None:
        return usable[-1]
    before = [s for s in usable if s.stop <= target]
    if not before:
        oldest = usable[0]
        raise BackupDefect(
            f"target_time {iso(target)} is outside the restorable range of stanza {info.name!r}: "
            f"before the end of its oldest backup set {oldest.label} ({iso(oldest.stop)})",
            hint="choose a later target; older backups have expired from the repository",
        )
    return before[-1]


def wal_names(first: str, last: str, segments_per_id: int) -> list[str]:
    """Segment names from ``first`` through ``last`` on ``first``'s timeline."""
    tli, a = split_name(first, segments_per_id)
    ltli, b = split_name(last, segments_per_id)
    if ltli != tli:
        b = a if b < a else b  # the archive's newest is on another timeline: fetch what this one has
    return [segment_name(tli, n, segments_per_id) for n in range(a, b + 1)]


# ------------------------------------------------------------------ the backend


@dataclass(frozen=True)
class PgbackrestPlan(PgPlan):
    """What preflight decided: this backup set of this stanza, whose WAL the archive holds up to ``info``'s max."""

    info: StanzaInfo
    chosen: BackupSet


class Pgbackrest(LocalPostgres):
    """LocalPostgres whose base backup comes from ``pgbackrest restore`` and whose WAL from ``archive-get``."""

    name = NAME

    def __init__(self, source: PgbackrestSource, settings: BackendSettings) -> None:
        super().__init__(source, settings)  # type: ignore[arg-type]  # only fields both sources have are used
        self.pb_source = source
        self.tool_version: str | None = None
        self._recovery_point: dict[str, Any] = {}  # the report's own dict: restore adds what it fetched
        self._fetch: dict[str, Any] = {}

    # ------------------------------------------------------------ running pgbackrest

    def _work(self) -> Path:
        """pgBackRest's lock and log paths, inside this run's scratch: nothing written next to the repository."""
        return self.settings.run_dir / "pgbackrest"

    def _base_args(self) -> list[str]:
        src = self.pb_source
        args = [f"--stanza={src.stanza}"]
        args.append(f"--config={src.config}" if src.config is not None else "--no-config")
        if src.repo_path is not None:
            args.append(f"--repo1-path={src.repo_path}")
        return args

    def _option_env(self) -> dict[str, str]:
        """Pass-through options and the drill's paths as PGBACKREST_* variables.

        pgBackRest refuses a command-line option that does not apply to the command (``job-retry``
        for ``info``, ``lock-path`` for ``verify``) but ignores such a variable, so one runbook's
        options serve every command the drill runs.
        """
        work = self._work()
        opts = {
            **self.pb_source.options,
            "lock-path": str(work / "lock"),
            "log-path": str(work / "log"),
            "log-level-file": "off",
            "log-level-console": "warn",
        }
        return {"PGBACKREST_" + k.upper().replace("-", "_"): v for k, v in opts.items()}

    def _run(
        self, command: str, *options: str, args: tuple[str, ...] = (), timeout: float = 600, bare: bool = False
    ) -> subprocess.CompletedProcess[str]:
        tool = shutil.which(TOOL)
        if tool is None:
            raise PreflightError("pgbackrest is not installed", hint="`sudo apt-get install pgbackrest`")
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP or k.startswith("PGBACKREST_")}
        env.setdefault("PATH", "/usr/bin:/bin")
        env.update(TZ="UTC", LC_ALL="C")
        if not bare:
            env.update(self._option_env())
        try:
            return subprocess.run(
                [
                    tool,
                    *([] if bare else self._base_args()),
                    *options,
                    command,
                    *args,
                ],
                capture_output=True,
                text=True,
                timeout=max(5.0, timeout),
                check=False,
                env=env,
                cwd="/",
            )
        except subprocess.TimeoutExpired:
            raise RestoreFailed(f"pgbackrest {command} did not finish within {timeout:.0f}s") from None

    @staticmethod
    def _why(proc: subprocess.CompletedProcess[str]) -> str:
        return (proc.stderr.strip() or proc.stdout.strip())[-600:] or f"exit {proc.returncode}"

    def _refused(self, proc: subprocess.CompletedProcess[str]) -> None:
        """Options pgBackRest rejects are the runbook's or the config's problem (exit 2), not the backup's."""
        if proc.returncode in OPTION_ERRORS:
            raise PreflightError(
                f"pgbackrest refused its options: {self._why(proc)}", hint="check source.config / source.options"
            )

    # ------------------------------------------------------------ preflight

    def inspect_repository(self, timeout: float) -> tuple[StanzaInfo, BackupSet, datetime | None]:
        """``pgbackrest info``: the stanza, the set for the target, its WAL in the archive (no server, no restore)."""
        src = self.pb_source
        private_dir(self._work(), None)
        version = self._run("version", bare=True)
        self.tool_version = version.stdout.strip() or None
        proc = self._run("info", "--output=json", timeout=timeout)
        if proc.returncode != 0:
            # a config pgBackRest rejects is the runbook's (exit 2); a repository it cannot read is the backup's
            self._refused(proc)
            raise BackupDefect(f"pgbackrest info failed: {self._why(proc)}", hint="is the repository reachable?")
        info = parse_info(proc.stdout, src.stanza)
        target = src.target_time if isinstance(src.target_time, datetime) else None
        chosen = choose_set(info, target, src.set)
        if info.wal_min is None or info.wal_max is None:
            raise BackupDefect(f"stanza {src.stanza!r}: the repository holds no archived WAL; no set can be recovered")
        if not (info.wal_min[8:] <= chosen.wal_start[8:] <= info.wal_max[8:]):
            raise BackupDefect(
                f"backup set {chosen.label} starts in WAL {chosen.wal_start}, outside the archive "
                f"({info.wal_min}..{info.wal_max}): it cannot become consistent"
            )
        return info, chosen, target

    def preflight(self, ctx: StepContext) -> PreflightReport[PgPlan]:
        src = self.pb_source
        self.run_as = run_as_for_server()
        if self.run_as is not None:
            ctx.log.info("server_user", user=self.run_as.name, reason="PostgreSQL refuses to run as root")
        info, chosen, target = self.inspect_repository(ctx.remaining_seconds())
        binaries = find_pg_binaries(int(info.pg_version) if info.pg_version else None)
        verified = self._verify(ctx.remaining_seconds()) if src.verify else None
        self._check_space(chosen.size_bytes + span_bytes(chosen.wal_start, info.wal_max or chosen.wal_start))
        self._recovery_point = {
            "kind": "pitr",
            "tool": {"name": "pgBackRest", "version": self.tool_version},
            "stanza": src.stanza,
            "repository": {
                "config": str(src.config) if src.config else None,
                "repo_path": str(src.repo_path) if src.repo_path else None,
                "options": sorted(src.options),  # names only: values may say where a bucket is, never secrets
            },
            "backup_set": chosen.facts(),
            "sets_in_repository": len(info.sets),
            "wal_archive": {
                "archive_min": info.wal_min,
                "archive_max": info.wal_max,
                "range_fetched": f"{chosen.wal_start}..{info.wal_max}",
                "verification": "full (page headers and pg_waldump records)"
                if src.wal_verify == "full"
                else "page headers of every needed segment",
            },
            "repository_verify": verified,
            "target_time": iso(target) if target else "latest",
            "earliest_restorable_time": iso(next((s.stop for s in info.sets if not s.error), chosen.stop)),
        }
        return PreflightReport(
            source={
                "engine": "postgres",
                "version": info.pg_version,
                "identifier": f"pgbackrest:{src.stanza}",
                "system_identifier": str(info.system_id) if info.system_id is not None else None,
            },
            recovery_point=self._recovery_point,
            plan=PgbackrestPlan(binaries, info, chosen),
            facts={"server_binaries": str(binaries.bindir), "server_user": self._user_name()},
        )

    def _verify(self, timeout: float) -> dict[str, Any]:
        proc = self._run("verify", timeout=timeout)
        if proc.returncode != 0:
            self._refused(proc)
            raise BackupDefect(f"pgbackrest verify found the repository damaged: {self._why(proc)}")
        return {"command": "pgbackrest verify", "result": "ok", "output": proc.stdout.strip()[-400:] or None}

    # ------------------------------------------------------------ restore

    def restore(self, plan: PgPlan, ctx: StepContext) -> PgRestored:
        plan = planned(plan, PgbackrestPlan, self.name)
        src, chosen = self.pb_source, plan.chosen
        cluster = self._new_cluster(ctx, plan.binaries)
        data = cluster.datadir
        ctx.mark("restore_requested", iso(ctx.clock.now()))
        private_dir(data, None)
        target = src.target_time if isinstance(src.target_time, datetime) else None
        how = ["--type=default"]
        if target is not None:
            stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            how = ["--type=time", f"--target={stamp}", "--target-action=promote", "--target-timeline=current"]
        proc = self._run(
            "restore",
            f"--pg1-path={data}",
            f"--set={chosen.label}",
            f"--process-max={src.process_max}",
            "--archive-mode=off",
            *how,
            timeout=ctx.remaining_seconds(),
        )
        if proc.returncode in DAMAGE_ERRORS:
            raise BackupDefect(
                f"backup set {chosen.label} is damaged in the repository: {self._why(proc)}",
                hint="`pgbackrest verify` names every damaged file; take a new full backup",
            )
        if proc.returncode != 0:
            self._refused(proc)
            raise RestoreFailed(f"pgbackrest restore of set {chosen.label} failed: {self._why(proc)}")
        wal = private_dir(cluster.datadir.parent / "wal", None)
        self._fetch_wal(plan, data, wal, ctx)
        # the evidence is built from the preflight report at the end: add what was fetched, then what recovery needs
        self._recovery_point["wal_archive"]["fetch"] = self._fetch
        return self._start_recovery(
            plan, cluster, inspect_base_backup(data), wal, target, full=src.wal_verify == "full"
        )

    def _start_recovery(
        self, plan: PgPlan, cluster: PgCluster, backup: BaseBackup, wal: Path, target: datetime | None, *, full: bool
    ) -> PgRestored:
        """Plan recovery over the WAL the drill fetched and checked (never the tool's own copy), and start it."""
        ids = None if self.run_as is not None else (os.geteuid(), os.getgroups())
        recovery = plan_pitr(backup, wal, target, plan.binaries.tool("pg_waldump"), server_ids=ids, full=full)
        self._recovery_point["wal_archive"].update(plan_facts(recovery))
        self.wal_source = wal
        self._configure(cluster, wal, target)
        chown_tree(wal, self.run_as)
        cluster.start(wait=False)
        return PgRestored(cluster, recovery)  # await_ready proves recovery against what the fetched WAL holds

    def _fetch_wal(self, plan: PgbackrestPlan, data: Path, wal: Path, ctx: StepContext) -> None:
        """``archive-get`` the set's WAL through the archive's newest segment; a missing one is left for the scan."""
        chosen, info, first = plan.chosen, plan.info, plan.chosen.wal_start
        last = info.wal_max or first  # preflight refused an archive without WAL

        def get(name: str) -> bool:
            proc = self._run(
                "archive-get", f"--pg1-path={data}", args=(name, str(wal / name)), timeout=ctx.remaining_seconds()
            )
            if proc.returncode not in (0, 1):  # 1: not in the archive
                raise RestoreFailed(f"pgbackrest archive-get {name} failed: {self._why(proc)}")
            return proc.returncode == 0

        if not get(first):
            raise BackupDefect(
                f"{first}: missing from the repository's archive: backup set {chosen.label} starts in it, "
                "recovery cannot begin",
                hint="check archive-push on the source (pgbackrest check)",
            )
        with (wal / first).open("rb") as fh:
            geo = geometry_of(fh.read(64), int(info.pg_version or 0), info.system_id or 0)
        if isinstance(geo, SegmentDefect):
            raise BackupDefect(f"{first}: {geo.problem}")
        per, seg_size = geo.segments_per_id, geo.segment_size
        tli, _ = split_name(first, per)
        missing = [n for n in wal_names(first, last, per)[1:] if not get(n)]
        offset = parse_lsn(chosen.lsn_start) % seg_size if chosen.lsn_start else 0
        get(f"{first}.{offset:08X}.backup")  # the set's end (STOP TIME), as a postgres-pitr archive has it
        if tli > 1:
            get(f"{tli:08X}.history")
        self._fetch = {
            "command": "pgbackrest archive-get",
            "segments": len(wal_names(first, last, per)) - len(missing),
            "missing_from_repository": missing[:20] + ([f"... {len(missing) - 20} more"] if len(missing) > 20 else []),
        }

    def _configure(self, cluster: PgCluster, wal: Path, target: datetime | None) -> None:
        """Recovery reads the verified copy; isolation overrides what pgBackRest and the source wrote."""
        data = cluster.datadir
        settings = {
            "restore_command": f"cp {wal}/%f %p",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "current",
            **self._isolating_settings(cluster),
        }
        if target is not None:
            settings["recovery_target_time"] = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        if not (data / "postgresql.conf").exists():
            (data / "postgresql.conf").write_text(
                "# restored by restore-drills: the source kept its config elsewhere\n"
            )
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (data / stale).unlink(missing_ok=True)
        with (data / "postgresql.auto.conf").open("a") as fh:
            fh.write("\n# --- restore-drills: recovery and isolation (overrides everything above)\n")
            for k, v in settings.items():
                fh.write(f"{k} = {_quote(v)}\n")
        (data / "pg_hba.conf").write_text("# restore-drills: only the private socket\nlocal all all trust\n")
        (data / "pg_ident.conf").touch()
        (data / "recovery.signal").touch()
        (data / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
        data.chmod(0o700)
        chown_tree(data, self.run_as)

    def _isolating_settings(self, cluster: PgCluster) -> dict[str, str]:
        # archive_mode=off already stops archiving; a failing command makes sure nothing is pushed if it were on
        return {**super()._isolating_settings(cluster), "archive_command": "/bin/false"}

    def target_facts(self) -> dict[str, Any]:
        return {**super().target_facts(), "kind": "local-postgres", "restored_with": "pgbackrest restore"}
