"""The drill's own account on a restored MariaDB server: a random in-memory password, read-only rights.

A PITR server carries the source's accounts, whose passwords the drill does not know, so it
starts with grants skipped (socket only); here ``FLUSH PRIVILEGES`` turns authentication back
on before the drill user is created. The replica threads are counted on the way: the server
was started with ``--skip-slave-start`` and none may run (an isolation fact).
"""

from __future__ import annotations

from typing import Any

from validators.endpoint import Secret

__all__ = ["create_drill_user"]


def create_drill_user(cur: Any, user: str, password: Secret, *, loopback: bool, grants_skipped: bool) -> int:
    """Create ``user`` (SELECT, SHOW VIEW, SHOW DATABASES) on the socket (and 127.0.0.1 with ``loopback``)
    through the admin cursor ``cur``; returns how many replica threads run (must be 0)."""
    pw = password.reveal().replace("'", "''")
    cur.execute("show all slaves status")  # started with --skip-slave-start: none may run
    cols = [d[0] for d in cur.description or ()]
    replicas_running = sum(
        1 for row in cur.fetchall() if dict(zip(cols, row, strict=False)).get("Slave_IO_Running") == "Yes"
    )
    if grants_skipped:
        cur.execute("flush privileges")  # authentication back on; this session keeps its rights
    hosts = ["localhost", "127.0.0.1"] if loopback else ["localhost"]
    for host in hosts:
        cur.execute(f"create or replace user '{user}'@'{host}' identified by '{pw}'")
        cur.execute(f"grant select, show view, show databases on *.* to '{user}'@'{host}'")
    return replicas_running
