"""Teardown of a local MariaDB server from its journaled record alone: after a crash the backend is gone.

The run's directory layout is defined here because teardown is what trusts it: it removes
``attrs.run_dir`` only when it is laid out as :mod:`drills.engines.mariadb.backend` lays it out.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from drills.backends.base import StepContext
from drills.engines.server_record import remove_run_dir, server_uid
from drills.errors import TeardownError
from drills.osutil import (
    ProcessIdentity,
    identity_of,
    pids_using,
    start_wall_time,
    stop_proven,
    user_name,
    why_not_ours,
)
from drills.resources import Resource, TeardownResult

__all__ = ["NAME", "OWNER_FILE", "ROOT_NAME", "SERVER_KIND", "teardown_server"]

NAME = "local-mariadb"
SERVER_KIND = "mariadb-server"
ROOT_NAME = "mariadb"
OWNER_FILE = ".restore-drills-owner"


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

    return remove_run_dir(resource, root, stopped, notes, ctx)


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
    uid = server_uid(a.get("run_as"))
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
