"""What both local engines journal about the server they start, read back in teardown, and how that teardown ends."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drills.clock import iso
from drills.errors import TeardownError
from drills.osutil import ProcessIdentity
from drills.resources import Resource, TeardownResult
from drills.wait import every, until

if TYPE_CHECKING:
    from drills.backends.base import StepContext

__all__ = ["remove_run_dir", "server_started", "server_uid"]


def server_started(resource: Resource, ident: ProcessIdentity) -> Resource:
    """The server's record with the identity of the running server, journaled right after it starts."""
    return Resource(resource.kind, resource.id, resource.backend, {**resource.attrs, **ident.to_attrs()})


def server_uid(run_as: Any) -> int:
    """The uid the journaled server ran as: the runner when the journal names none."""
    if not run_as:
        return os.geteuid()
    try:
        return pwd.getpwnam(str(run_as)).pw_uid
    except KeyError:
        raise TeardownError(f"the server user {run_as!r} of the journal does not exist here") from None


def remove_run_dir(
    resource: Resource, root: Path, stopped: list[int], notes: list[str], ctx: StepContext
) -> TeardownResult:
    """The last step of a local server's teardown, once its processes are proven stopped: remove the run's
    directory (retried for a second: a server's last files can still be closing) and say what was done."""

    def removed() -> bool:
        shutil.rmtree(root, ignore_errors=True)
        return not root.exists()

    until(ctx.clock, 1.0, removed, f"{root} removed", policy=every(0.05))
    if root.exists():
        return TeardownResult(resource, deleted=False, detail=f"{root} could not be removed")
    what = f"server (pid {', '.join(map(str, stopped))}) stopped" if stopped else "no server running"
    detail = "; ".join([f"{what}; {root} removed", *notes])
    ctx.log.info("teardown", resource=resource.id, detail=detail)
    return TeardownResult(resource, deleted=True, detail=detail, verified_at=iso(ctx.clock.now()))
