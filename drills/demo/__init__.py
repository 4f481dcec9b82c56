"""``drill demo``: build a source database and its backups on this machine, then drill them.

``postgres`` and ``mariadb`` build the source of their engine; ``common`` runs the drill and
reports it as a user would see it (the summary comes from :mod:`drills.render`, as the CLI's does).
"""
