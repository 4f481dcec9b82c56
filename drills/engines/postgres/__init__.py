"""Local PostgreSQL: ``server`` (throwaway clusters), ``wal`` (WAL page headers), ``backup``
(base backup, manifest and the PITR plan), ``restore_files`` (copy, safe tar extraction, WAL
staging) and ``backend`` (the ``local-postgres`` drill backend)."""
