"""restore-drills: prove that database backups restore.

The public entry points are the ``drill`` CLI (:mod:`drills.cli`) and
:func:`drills.api.run_drill`. Heavy dependencies (boto3, database drivers)
are imported lazily so that the CLI starts fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
