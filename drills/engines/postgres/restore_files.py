"""Laying a base backup and its WAL out for the restored server: copy, safe tar extraction, staging.

Failures are worded for a person: the first OS error and how many more, never the list of every
path ``shutil.copytree`` collects (a full disk used to produce a 150 KB message).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

from drills.errors import BackupDefect, RestoreFailed
from drills.osutil import RunAs, chown_tree, readable_by

__all__ = ["copy_base_backup", "extract_tar", "stage_wal", "unsafe_member"]


def _short(exc: BaseException, what: str) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        errors = exc.args[0]
        first = errors[0][2] if errors and len(errors[0]) > 2 else str(errors[:1])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{what}: {first}{more}"
    if isinstance(exc, OSError):
        return f"{what}: {exc.strerror or exc} ({exc.filename})"
    return f"{what}: {exc}"


def copy_base_backup(src: Path, dest: Path) -> None:
    """A plain base backup copied with ``cp -a`` (C speed; Python's copytree costs ~2x on many small files)."""
    proc = subprocess.run(["cp", "-a", "--", str(src), str(dest)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        more = f" (and {len(lines) - 1} more errors)" if len(lines) > 1 else ""
        raise RestoreFailed(f"copying the base backup failed: {lines[0] if lines else 'cp failed'}{more}")


def unsafe_member(m: tarfile.TarInfo, dest: Path) -> str | None:
    """Why a tar member must not be extracted (absolute, escaping, a device, a link out), or None.

    Our own check, because ``extractall(filter="data")`` arrived in Python 3.11.4 and Debian 12
    ships 3.11.2; the rules follow the ``data`` filter's.
    """
    name = PurePosixPath(m.name)
    if name.is_absolute() or ".." in name.parts:
        return f"{m.name}: path leaves the data directory"
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        return f"{m.name}: device or fifo"
    if m.issym() or m.islnk():
        link = PurePosixPath(m.linkname)
        base = name.parent if m.issym() else PurePosixPath()
        if link.is_absolute() or ".." in (base / link).parts:
            target = os.path.normpath(dest / base / link)
            if not target.startswith(str(dest) + os.sep):
                return f"{m.name}: link to {m.linkname} leaves the data directory"
    return None


def extract_tar(tar_path: Path, dest: Path) -> None:
    """Extract a base backup tar into ``dest``; a hostile or corrupt member is a backup defect."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            bad = [why for m in members if (why := unsafe_member(m, dest))]
            if bad:
                raise BackupDefect(
                    f"{tar_path}: refusing to extract: {bad[0]}"
                    + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                )
            for m in members:
                m.mode = (m.mode | 0o600) & 0o700 if m.isfile() else 0o700 if m.isdir() else m.mode
            tar.extractall(dest, members=members)  # noqa: S202 - every member checked by unsafe_member above
    except (tarfile.TarError, EOFError) as exc:
        raise BackupDefect(f"{tar_path}: corrupt tar ({exc})") from None
    except OSError as exc:
        raise RestoreFailed(_short(exc, f"extracting {tar_path.name}")) from None


def stage_wal(archive: Path, names: list[str], root: Path, run_as: RunAs | None) -> Path:
    """The archive itself when the server's user can read every needed file, else a private copy of those.

    Only the segments (and history files) the target needs are copied: staging a whole archive
    for one night's target would cost time and scratch space the RTO pays for.
    """
    if run_as is None:
        return archive
    gids = os.getgrouplist(run_as.name, run_as.gid)
    try:
        dir_ok = _dir_ok(archive, run_as, gids)
        stats = [(archive / n).stat() for n in names]
    except OSError as exc:
        raise BackupDefect(_short(exc, "reading the WAL archive")) from None
    if dir_ok and all(readable_by(st.st_mode, st.st_uid, st.st_gid, run_as.uid, gids) for st in stats):
        return archive
    staged = root / "wal"
    staged.mkdir(mode=0o700)
    try:
        for n in names:
            shutil.copyfile(archive / n, staged / n)
    except OSError as exc:
        raise RestoreFailed(_short(exc, "staging WAL for the server's user")) from None
    chown_tree(staged, run_as)
    return staged


def _dir_ok(path: Path, run_as: RunAs, gids: list[int]) -> bool:
    """Every directory from / down to ``path`` lets the user through, and ``path`` lets it list."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if st.st_uid == run_as.uid:
            bits = 0o100
        elif st.st_gid in gids:
            bits = 0o010
        else:
            bits = 0o001
        if not st.st_mode & bits:
            return False
    return True
