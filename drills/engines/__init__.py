"""Database engines on this machine: one folder per engine, one file per job.

Each engine package holds ``server.py`` (start and stop a throwaway server), the backup
inspection its preflight runs, and ``backend.py`` (the drill backend). Nothing here imports
another engine; what both engines share with the rest of the code lives in :mod:`drills.osutil`.
"""
