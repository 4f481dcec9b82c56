"""What isolates a restored MariaDB server, read back from the running server and recorded as facts.

No TCP listener (or 127.0.0.1 only), a private socket directory owned by the server's user, a
server that does not run as root, binary logging off, no event scheduler and no replica thread,
file import/export confined to the run's directory.
"""

from __future__ import annotations

import os
from typing import Any

from drills.backends.base import Fact
from drills.engines.mariadb.server import MariaServer
from drills.osutil import RunAs, uid_of

__all__ = ["read_isolation"]


def read_isolation(
    server: MariaServer, conn: Any, *, run_as: RunAs | None, loopback: bool, replicas_running: int, user_name: str
) -> tuple[str, list[Fact]]:
    """The server's version and its isolation facts, read back from the running server over ``conn``
    (the caller fails the drill on any fact that did not pass)."""
    with conn.cursor() as cur:
        cur.execute(
            "select @@skip_networking, @@bind_address, @@port, @@socket, @@log_bin, "
            "@@event_scheduler, @@secure_file_priv, @@version"
        )
        skip_net, bind, port, sock, log_bin, events, file_priv, version = cur.fetchone()
    pid = server.pid()
    uid = uid_of(pid) if pid else None
    want_uid = run_as.uid if run_as else os.geteuid()
    st = server.socket_dir.stat()
    mode = oct(st.st_mode & 0o777)
    if loopback:
        listen_ok = not skip_net and bind == "127.0.0.1"
        listen_detail = "TCP only on 127.0.0.1; plus the private socket"
    else:
        listen_ok = bool(skip_net)
        listen_detail = "no TCP listener: reachable only through the private socket"
    facts = [
        Fact(
            check="listen",
            subject="restored server",
            value={"skip_networking": int(skip_net), "bind_address": bind, "port": int(port), "socket": sock},
            passed=listen_ok and sock == str(server.socket),
            detail=listen_detail,
        ),
        Fact(
            check="socket_directory_private",
            subject=str(server.socket_dir),
            value=mode,
            passed=mode == "0o700" and st.st_uid == want_uid,
            detail=f"owned by {user_name}",
        ),
        Fact(
            check="server_user",
            subject=f"mariadbd pid {pid}",
            value=uid,
            passed=uid is not None and uid == want_uid and uid != 0,
            detail=f"runs as {user_name}, not root",
        ),
        Fact(
            check="binlog_off",
            subject="restored server",
            value=int(log_bin),
            passed=int(log_bin) == 0,
            detail="the restored server writes no binary log, so never into the source's binlog directory",
        ),
        Fact(
            check="no_scheduler_no_replication",
            subject="restored server",
            value={"event_scheduler": str(events), "replicas_running": replicas_running},
            passed=str(events) == "OFF" and replicas_running == 0,
            detail="no scheduled event runs and no replica thread connects to a primary",
        ),
        Fact(
            check="secure_file_priv",
            subject="restored server",
            value=file_priv,
            passed=bool(file_priv) and str(file_priv).startswith(str(server.root)),
            detail="file import/export confined to the run's directory",
        ),
    ]
    return str(version), facts
