"""What isolates a restored PostgreSQL server, read back from the running server and recorded as facts.

No TCP listener (``listen_addresses=''``), a 0700 socket directory, ``pg_hba.conf`` with ``local``
lines only, ``archive_mode`` off (never writing into the production archive) and no
``primary_conninfo`` (following no primary).
"""

from __future__ import annotations

from drills.backends.base import Fact
from drills.engines.postgres.server import PgCluster

__all__ = ["read_isolation"]


def read_isolation(c: PgCluster, user: str, user_name: str) -> list[Fact]:
    """The isolation facts of the running server ``c``, read back over its socket as ``user`` (the caller
    fails the drill on any that did not pass)."""
    import psycopg

    with psycopg.connect(c.conninfo("postgres", user), autocommit=True) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "select name, setting from pg_settings where name in "
                "('listen_addresses','unix_socket_directories','unix_socket_permissions',"
                "'archive_mode','primary_conninfo','port')"
            ).fetchall()
        )
        hba = [str(r[0]) for r in conn.execute("select type from pg_hba_file_rules where error is null").fetchall()]
    mode = oct(c.socket_dir.stat().st_mode & 0o777)
    facts = [
        Fact(
            check="listen_addresses",
            subject="restored server",
            value=settings.get("listen_addresses", "?"),
            passed=settings.get("listen_addresses", "x") == "",
            detail="no TCP listener: reachable only through the private socket",
        ),
        Fact(
            check="socket_directory_private",
            subject=str(c.socket_dir),
            value=mode,
            passed=mode == "0o700",
            detail=f"owned by {user_name}",
        ),
        Fact(
            check="hba_local_only",
            subject="pg_hba.conf",
            value=hba,
            passed=bool(hba) and all(t == "local" for t in hba),
            detail="only local (socket) connections are accepted",
        ),
        Fact(
            check="archive_mode_off",
            subject="restored server",
            value=settings.get("archive_mode"),
            passed=settings.get("archive_mode") == "off",
            detail="the restored server never writes into the source's WAL archive",
        ),
        Fact(
            check="no_primary_conninfo",
            subject="restored server",
            value="set" if settings.get("primary_conninfo") else "",
            passed=not settings.get("primary_conninfo"),
            detail="the restored server follows no primary",
        ),
    ]
    return facts
