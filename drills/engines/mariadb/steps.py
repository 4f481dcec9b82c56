"""What a MariaDB drill hands from step to step: frozen values, so no step reads another's leftovers.

preflight decides a :data:`MariaPlan` (a backup and the binlogs to replay, or a dump);
restore returns :class:`MariaRestored`, the started server and that plan; await_ready returns
:class:`MariaReady`, the loaded server isolation and the endpoint are read from.
"""

from __future__ import annotations

from dataclasses import dataclass

from drills.engines.mariadb.backup import DumpPrepared, PitrPrepared
from drills.engines.mariadb.server import MariaServer

__all__ = ["MariaPlan", "MariaReady", "MariaRestored"]

MariaPlan = PitrPrepared | DumpPrepared


@dataclass(frozen=True)
class MariaRestored:
    """The started server (socket only) and what preflight planned for it."""

    server: MariaServer
    plan: MariaPlan


@dataclass(frozen=True)
class MariaReady:
    """The server brought to the target, with the drill's user, as the validators will find it."""

    server: MariaServer
    database: str  # the dump's own database when it names one, else the runbook's
    replicas_running: int  # read when the drill user was created: no replica thread may run
