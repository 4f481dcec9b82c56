"""Validators: checks that run against a restored database.

They know an :class:`~validators.endpoint.Endpoint` and nothing about where
the database lives (a local throwaway server, RDS, Aurora behind a tunnel).
Driver-specific SQL lives in :mod:`validators.dialects`; the rest is shared.
"""
