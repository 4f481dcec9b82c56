"""Local MariaDB: ``server`` (throwaway servers), ``binlog`` (binary log inspection and replay
tracking), ``backup`` (mariadb-backup and dump checks), ``dump`` (streaming a dump into the
server), ``accounts`` (the drill's users and grants) and ``backend`` (the ``local-mariadb``
drill backend)."""
