"""Barman backend: drill a server of a Barman catalogue into a throwaway local server.

Built on :class:`~drills.engines.postgres.backend.LocalPostgres` (subclassed, not copied), the
same way as :mod:`drills.engines.postgres.pgbackrest`: the same scratch server, isolation, completeness
proof after recovery and teardown. What differs is where the base backup and the WAL come from:

- preflight reads ``barman -f json list-backups`` and ``show-backup`` (Barman 3.4 has JSON
  output for both): the backups that are ``DONE``, the newest one that ended before the target
  (or the named ``backup_id``), its WAL range and the newest archived segment. A target before
  every backup is a :class:`~drills.errors.BackupDefect`. ``barman -f json check`` runs too;
  its checks about the repository (directories, system id, the user's own redundancy and age
  policies) fail the drill, those about reaching the source server are recorded, not fatal: a
  drill restores from the repository, the source may be down.
- restore runs ``barman recover --get-wal`` into the scratch data directory (the base backup
  only: Barman copies no WAL), then fetches the WAL from the backup's start through the newest
  archived segment with ``barman get-wal`` into a private copy, checked exactly as a
  ``postgres-pitr`` archive is (:func:`~drills.engines.postgres.plan.plan_pitr`). Recovery reads
  that verified copy; ``pg_wal`` is left empty so nothing unverified is replayed.

The repository is only ever read. Barman takes lock files in its ``barman_lock_directory``
(by default the repository's home) even to read; the drill runs Barman with a private copy of
the config whose lock directory and log file are in the drill's scratch directory. The restored
server has ``archive_mode=off`` and ``archive_command=/bin/false``.
``tests/functional/test_barman.py`` hashes every file of the repository before and after.
"""

from __future__ import annotations

import bz2
import configparser
import gzip
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drills.backends.base import BackendSettings, PreflightReport, StepContext
from drills.clock import SystemClock, iso
from drills.engines.postgres.backend import _optional_tool
from drills.engines.postgres.backup import inspect_base_backup, listed
from drills.engines.postgres.barman_catalogue import (
    BarmanBackup,
    choose_backup,
    classify_check,
    parse_list_backups,
    parse_show_backup,
    parse_xlogdb,
)
from drills.engines.postgres.barman_declaration import BarmanSource
from drills.engines.postgres.pgbackrest import Pgbackrest, wal_names
from drills.engines.postgres.server import PgBinaries, find_pg_binaries, run_as_for_server
from drills.engines.postgres.steps import PgPlan, PgRestored, planned
from drills.engines.postgres.wal import SegmentDefect, geometry_of, split_name
from drills.errors import BackupDefect, PreflightError, RestoreFailed
from drills.osutil import RunAs, chown_tree, private_dir

__all__ = ["Barman", "check_backup", "create"]

NAME = "barman"
TOOL = "barman"
_ENV_KEEP = ("PATH", "HOME", "TMPDIR")


def create(source: Any, settings: BackendSettings) -> Barman:
    return Barman(source, settings)


def check_backup(source: BarmanSource) -> dict[str, Any]:
    """``drill validate``: what preflight checks without a server (catalogue, backup for the target, check)."""
    with tempfile.TemporaryDirectory(prefix="restore-drill-validate-") as d:
        b = Barman(source, BackendSettings(run_id="validate", run_dir=Path(d) / "run", clock=SystemClock()))
        chosen = b.inspect_repository(600)
    return {"tool": b.tool_version, "backup": chosen.facts(), "barman_check": b.check_result}


# ------------------------------------------------------------------ the backend


@dataclass(frozen=True)
class BarmanPlan(PgPlan):
    """What preflight decided: this backup of this server, and where its filed WAL can be read directly."""

    chosen: BarmanBackup
    direct: tuple[Path, dict[str, str | None]] | None  # wals_directory and xlog.db; None: get-wal for every one
    barman_user: RunAs | None  # who Barman drops to (None: this process): it writes where restore puts things


class Barman(Pgbackrest):
    """Pgbackrest's flow (LocalPostgres underneath) with Barman's catalogue, ``recover`` and ``get-wal``."""

    name = NAME

    def __init__(self, source: BarmanSource, settings: BackendSettings) -> None:
        super().__init__(source, settings)  # type: ignore[arg-type]  # only fields both sources have are used
        self.bm_source = source
        self.check_result: dict[str, Any] | None = None  # `barman check`, for drill validate and the evidence
        self.barman_user: RunAs | None = None  # from the config, as preflight reads it (the plan carries it on)

    # ------------------------------------------------------------ running barman

    def _work(self) -> Path:
        return self.settings.run_dir / "barman"

    def _private_config(self) -> Path:
        """The user's barman.conf with lock directory and log file moved into the scratch directory."""
        src = self.bm_source.config
        parser = configparser.RawConfigParser(strict=False)
        try:
            if not parser.read(src):
                raise PreflightError(f"source.config: {src} cannot be read", hint="check the path and permissions")
        except configparser.Error as exc:
            raise PreflightError(f"source.config: {src} is not a barman.conf: {exc}".splitlines()[0]) from None
        if not parser.has_section("barman"):
            raise PreflightError(f"source.config: {src} has no [barman] section", hint="point it at barman.conf")
        work = self._work()
        user = parser.get("barman", "barman_user", fallback="barman")
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise PreflightError(f"source.config: barman_user {user!r} does not exist on this host") from None
        self.barman_user = None if pw.pw_uid == os.geteuid() else RunAs(user, pw.pw_uid, pw.pw_gid)
        parser.set("barman", "barman_lock_directory", str(work / "lock"))
        parser.set("barman", "log_file", str(work / "barman.log"))
        private_dir(work / "lock", self.barman_user)
        conf = work / "barman.conf"
        with conf.open("w") as fh:
            parser.write(fh)
        conf.chmod(0o600)
        chown_tree(work, self.barman_user)
        return conf

    def _barman(self, *args: str, timeout: float = 600, json_out: bool = False) -> subprocess.CompletedProcess[str]:
        tool = shutil.which(TOOL)
        if tool is None:
            raise PreflightError("barman is not installed", hint="`sudo apt-get install barman`")
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
        env.setdefault("PATH", "/usr/bin:/bin")
        env.update(TZ="UTC", LC_ALL="C.UTF-8")
        conf = self._work() / "barman.conf"
        fmt = ["-f", "json"] if json_out else []
        try:
            return subprocess.run(
                [tool, "-c", str(conf), *fmt, *args],
                capture_output=True,
                text=True,
                timeout=max(5.0, timeout),
                check=False,
                env=env,
                cwd="/",
            )
        except subprocess.TimeoutExpired:
            raise RestoreFailed(f"barman {args[0]} did not finish within {timeout:.0f}s") from None

    # ------------------------------------------------------------ preflight

    def inspect_repository(self, timeout: float) -> BarmanBackup:  # type: ignore[override]
        src = self.bm_source
        private_dir(self._work(), None)
        self._private_config()
        version = self._barman("--version", timeout=timeout)
        self.tool_version = (version.stdout.strip() or version.stderr.strip()).split(" Barman")[0] or None
        proc = self._barman("list-backups", src.server, timeout=timeout, json_out=True)
        if proc.returncode != 0:
            raise BackupDefect(f"barman list-backups failed: {self._why(proc)}", hint="is the catalogue readable?")
        backups = parse_list_backups(proc.stdout, src.server)
        target = src.target_time if isinstance(src.target_time, datetime) else None
        chosen_id = choose_backup(backups, src.server, target, src.backup_id)
        proc = self._barman("show-backup", src.server, chosen_id, timeout=timeout, json_out=True)
        if proc.returncode != 0:
            raise BackupDefect(f"barman show-backup {chosen_id} failed: {self._why(proc)}")
        chosen = parse_show_backup(proc.stdout, src.server)
        if target is not None and chosen.end > target:
            raise BackupDefect(
                f"target_time {iso(target)} is before the end of backup {chosen.backup_id} ({iso(chosen.end)})",
                hint="choose a later target or an older backup",
            )
        if chosen.last_available_wal is None or chosen.last_available_wal[8:] < chosen.end_wal[8:]:
            raise BackupDefect(
                f"backup {chosen.backup_id} ends in WAL {chosen.end_wal} but the archive's newest segment is "
                f"{chosen.last_available_wal}: it cannot become consistent"
            )
        proc = self._barman("check", src.server, timeout=timeout, json_out=True)
        self.check_result = classify_check(proc.stdout, src.server)
        self._backups = backups
        return chosen

    def preflight(self, ctx: StepContext) -> PreflightReport[PgPlan]:
        src = self.bm_source
        self.run_as = run_as_for_server()
        if self.run_as is not None:
            ctx.log.info("server_user", user=self.run_as.name, reason="PostgreSQL refuses to run as root")
        chosen = self.inspect_repository(ctx.remaining_seconds())
        direct = self._catalogue_wal(ctx.remaining_seconds())  # where restore reads the filed segments
        target = src.target_time if isinstance(src.target_time, datetime) else None
        binaries = find_pg_binaries(chosen.pg_version // 10000 if chosen.pg_version else None)
        last = chosen.last_available_wal or chosen.end_wal
        self._check_space(chosen.size_bytes + chosen.wal_size_bytes)
        earliest = next((end for _, status, end in self._backups if status == "DONE" and end), chosen.end)
        self._recovery_point = {
            "kind": "pitr",
            "tool": {"name": "Barman", "version": self.tool_version},
            "server": src.server,
            "repository": {"config": str(src.config)},
            "backup": chosen.facts(),
            "backups_in_catalogue": len(self._backups),
            "barman_check": self.check_result,
            "wal_archive": {
                "archive_max": last,
                "range_fetched": f"{chosen.begin_wal}..{last}",
                "verification": "full (page headers and pg_waldump records)"
                if src.wal_verify == "full"
                else "page headers of every needed segment",
            },
            "target_time": iso(target) if target else "latest",
            "earliest_restorable_time": iso(earliest),
        }
        return PreflightReport(
            source={
                "engine": "postgres",
                "version": str(chosen.pg_version // 10000) if chosen.pg_version else None,
                "identifier": f"barman:{src.server}",
                "system_identifier": None,
            },
            recovery_point=self._recovery_point,
            plan=BarmanPlan(binaries, chosen, direct, self.barman_user),
            facts={"server_binaries": str(binaries.bindir), "server_user": self._user_name()},
        )

    # ------------------------------------------------------------ restore

    def restore(self, plan: PgPlan, ctx: StepContext) -> PgRestored:
        plan = planned(plan, BarmanPlan, self.name)
        src, chosen = self.bm_source, plan.chosen
        cluster = self._new_cluster(ctx, plan.binaries)
        data = cluster.datadir
        ctx.mark("restore_requested", iso(ctx.clock.now()))
        private_dir(data, plan.barman_user)  # Barman drops to barman_user: it must be able to write there
        target = src.target_time if isinstance(src.target_time, datetime) else None
        how = []
        if target is not None:
            stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            how = [f"--target-time={stamp}", "--target-action=promote"]
        # --get-wal: Barman copies the base backup only; the drill fetches and checks the WAL itself
        proc = self._barman(
            "recover", "--get-wal", *how, src.server, chosen.backup_id, str(data), timeout=ctx.remaining_seconds()
        )
        if proc.returncode != 0:
            raise RestoreFailed(f"barman recover of backup {chosen.backup_id} failed: {self._why(proc)}")
        self._recovery_point["backup"]["verification"] = self._verify_restored(plan.binaries, data, chosen.backup_id)
        for leftover in (data / "barman_wal", data / "pg_wal"):
            for f in leftover.glob("0*"):  # nothing but the verified copy may be replayed
                f.unlink()
        backup = inspect_base_backup(data)  # its pg_control names the cluster every segment must belong to
        self._recovery_point["system_identifier"] = str(backup.system_identifier)
        wal = private_dir(cluster.datadir.parent / "wal", plan.barman_user)
        self._fetch_barman_wal(plan, wal, backup.system_identifier, ctx)
        self._recovery_point["wal_archive"]["fetch"] = self._fetch
        return self._start_recovery(plan, cluster, backup, wal, target, full=src.wal_verify == "full")

    def _verify_restored(self, binaries: PgBinaries, data: Path, backup_id: str) -> dict[str, Any]:
        """The restored files against pg_basebackup's ``backup_manifest`` (Barman keeps it as ``backup_manifest.ID``).

        ``barman recover`` is a plain copy with no checksum of its own: a damaged file in the
        catalogue would be restored silently. Barman rewrites the configuration files and adds
        its own; those (not data) are left out of the comparison.
        """
        manifest = data / f"backup_manifest.{backup_id}"
        tool = _optional_tool(binaries, "pg_verifybackup")
        if not manifest.is_file() or tool is None:
            why = "no backup_manifest in the backup" if tool else "pg_verifybackup not found"
            return {"method": f"none: {why}", "files_checked": None}
        ignored = [
            "postgresql.conf", "postgresql.auto.conf", "postgresql.conf.origin", "postgresql.auto.conf.origin",
            "recovery.signal", "standby.signal", "barman_wal", ".barman-recover.info", manifest.name,
        ]  # fmt: skip
        proc = subprocess.run(
            [tool, "--no-parse-wal", "--quiet", "-m", str(manifest), *(f"--ignore={i}" for i in ignored), str(data)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
            timeout=3600,
        )
        if proc.returncode != 0:
            errors = [ln.removeprefix("pg_verifybackup: ").removeprefix("error: ") for ln in proc.stderr.splitlines()]
            raise BackupDefect(
                f"backup {backup_id} restored by barman recover does not match its backup_manifest: {listed(errors)}",
                hint="the catalogue's copy is damaged; take a new backup",
            )
        return {"method": "pg_verifybackup --no-parse-wal against backup_manifest (configuration files excepted)"}

    def _fetch_barman_wal(self, plan: BarmanPlan, wal: Path, system_id: int, ctx: StepContext) -> None:
        """``barman get-wal`` from the backup's first segment through the newest archived one."""
        chosen, direct = plan.chosen, plan.direct
        first, last = chosen.begin_wal, chosen.last_available_wal or chosen.end_wal

        copied = {"direct": 0, "get-wal": 0}

        def get(name: str) -> bool:
            if direct is not None and self._copy_direct(direct, name, wal):
                copied["direct"] += 1
                return True
            copied["get-wal"] += 1
            proc = self._barman(
                "get-wal", f"--output-directory={wal}", self.bm_source.server, name, timeout=ctx.remaining_seconds()
            )
            if proc.returncode != 0:
                (wal / name).unlink(missing_ok=True)  # Barman leaves an empty file behind when it has none
                if "not found" not in (proc.stderr + proc.stdout):
                    raise RestoreFailed(f"barman get-wal {name} failed: {self._why(proc)}")
                return False
            return True

        if not get(first):
            raise BackupDefect(
                f"{first}: missing from the Barman archive: backup {chosen.backup_id} starts in it, "
                "recovery cannot begin",
                hint="check the WAL archiving of the source (barman check)",
            )
        with (wal / first).open("rb") as fh:
            geo = geometry_of(fh.read(64), (chosen.pg_version or 0) // 10000, system_id)
        if isinstance(geo, SegmentDefect):
            raise BackupDefect(f"{first}: {geo.problem}")
        per = geo.segments_per_id
        tli, _ = split_name(first, per)
        names = wal_names(first, last, per)
        missing = [n for n in names[1:] if not get(n)]
        offset = int(chosen.begin_lsn.split("/")[1], 16) % geo.segment_size if "/" in chosen.begin_lsn else 0
        get(f"{first}.{offset:08X}.backup")
        if tli > 1:
            get(f"{tli:08X}.history")
        self._fetch = {
            "command": "barman get-wal",
            "read_directly_from_wals_directory": copied["direct"],
            "fetched_with_get_wal": copied["get-wal"],
            "segments": len(names) - len(missing),
            "missing_from_repository": missing[:20] + ([f"... {len(missing) - 20} more"] if len(missing) > 20 else []),
        }

    def _catalogue_wal(self, timeout: float) -> tuple[Path, dict[str, str | None]] | None:
        """The server's ``wals_directory`` and its ``xlog.db``, to read segments without a Barman process each.

        ``barman get-wal`` costs a Python start (~0.45 s) per segment; reading the file Barman
        filed (and decompressing gzip/bzip2 as get-wal would) is what get-wal does, minus the
        start. Anything unusual (no xlog.db, a custom compression, a file not where xlog.db says)
        falls back to ``barman get-wal`` for that segment.
        """
        proc = self._barman("show-server", self.bm_source.server, timeout=timeout, json_out=True)
        try:
            wals = Path(str(json.loads(proc.stdout)[self.bm_source.server]["wals_directory"]))
            return wals, parse_xlogdb((wals / "xlog.db").read_text())
        except (ValueError, KeyError, TypeError, OSError):
            return None

    @staticmethod
    def _copy_direct(direct: tuple[Path, dict[str, str | None]], name: str, wal: Path) -> bool:
        wals, xlogdb = direct
        if name not in xlogdb:
            return False
        comp = xlogdb[name]
        opener: Any = {None: open, "gzip": gzip.open, "pigz": gzip.open, "bzip2": bz2.open}.get(comp)
        if opener is None:
            return False
        dest = wal / name
        try:
            with opener(wals / name[:16] / name, "rb") as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, EOFError):
            dest.unlink(missing_ok=True)
            return False
        return True

    def target_facts(self) -> dict[str, Any]:
        return {**super().target_facts(), "restored_with": "barman recover"}
