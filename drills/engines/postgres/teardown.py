"""Teardown of a local PostgreSQL server from its journaled record alone: after a crash the backend is gone.

The run's directory layout (``.../restore-drill-RUN/pg/data``) is checked here because teardown is
what trusts it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from drills.backends.base import StepContext
from drills.engines.server_record import remove_run_dir, server_uid
from drills.errors import TeardownError
from drills.osutil import ProcessIdentity, identity_of, pids_naming, stop_proven, why_not_ours
from drills.resources import Resource, TeardownResult

__all__ = ["NAME", "SERVER_KIND", "teardown_server"]

NAME = "local-postgres"
SERVER_KIND = "postgres-server"


def _pid_file_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def teardown_server(resource: Resource, ctx: StepContext) -> TeardownResult:
    """Stop the server and remove its directory, from the resource record alone; idempotent.

    Nothing named by the record is executed: the server is stopped with
    signals (SIGINT = fast shutdown, SIGQUIT = immediate, then SIGKILL), the
    way ``pg_ctl stop`` does, and only to the process proven to be the
    postmaster this run started (:func:`drills.osutil.why_not_ours`: owner,
    data directory on its command line, start time journaled at launch). A
    pid in ``postmaster.pid`` or the record that is some other process is
    left alone and said so. The directory is removed only when it is laid out
    as this backend lays it out (``.../restore-drill-RUN/pg/data``) and no
    unproven process still runs on it.
    """
    if resource.kind != SERVER_KIND or resource.backend != NAME:
        raise TeardownError(f"local-postgres does not own {resource.kind} {resource.id}")
    a = resource.attrs
    root, datadir = Path(a["root"]), Path(a["datadir"])
    if (
        not root.is_absolute()
        or root.name != "pg"
        or datadir != root / "data"
        or Path(resource.id) != datadir
        or not root.parent.name.startswith("restore-drill-")
        or root.is_symlink()
    ):
        raise TeardownError(f"refusing to remove {root}: not a directory this tool laid out")
    uid = server_uid(a.get("run_as"))
    expected = ProcessIdentity.from_attrs(a)
    notes: list[str] = []
    stopped: list[int] = []
    candidates = [p for p in (expected.pid if expected else None, _pid_file_pid(datadir)) if p is not None]
    for pid in dict.fromkeys([*candidates, *pids_naming(datadir)]):

        def ours(pid: int = pid) -> bool:
            return why_not_ours(pid, expected=expected, uid=uid, datadir=datadir) is None

        why = why_not_ours(pid, expected=expected, uid=uid, datadir=datadir)
        if why == "gone":
            continue
        if why is not None:
            notes.append(f"pid {pid} not signalled: {why}")
            continue
        ident = identity_of(pid)
        steps = [(signal.SIGINT, 30.0), (signal.SIGQUIT, 10.0), (signal.SIGKILL, 10.0)]
        if ident is not None and not stop_proven(ident, ours, steps):
            return TeardownResult(resource, deleted=False, detail=f"server process {pid} still running")
        stopped.append(pid)
    left = pids_naming(datadir)
    if left:
        return TeardownResult(
            resource,
            deleted=False,
            detail=f"{root} kept: process(es) {left} run on {datadir} but are not proven to be the server this run "
            f"started ({'; '.join(notes)}); stop them yourself, then run `drill teardown` again",
        )

    return remove_run_dir(resource, root, stopped, notes, ctx)
