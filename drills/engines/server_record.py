"""What both local engines journal about the server they start, and read back in teardown."""

from __future__ import annotations

import os
import pwd
from typing import Any

from drills.errors import TeardownError
from drills.osutil import ProcessIdentity
from drills.resources import Resource

__all__ = ["server_started", "server_uid"]


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
