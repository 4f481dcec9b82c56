"""Validators: checks that run against a restored database.

They know an :class:`~validators.endpoint.Endpoint` and nothing about where
the database lives (a local throwaway server, RDS, Aurora behind a tunnel).
Driver-specific SQL lives in :mod:`validators.dialects`; the rest is shared.

The public names below load on first use (PEP 562): ``import validators``
stays cheap and never imports psycopg or pymysql, which the ``drill`` CLI
needs only once a drill actually connects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from validators.base import Finding, ValidationReport
    from validators.baseline import capture_baseline, load_baseline, write_baseline
    from validators.config import FreshnessConfig, RowCountRule, SchemaConfig, SmokeQuery, ValidatorsConfig
    from validators.connect import connect, probe
    from validators.dsn import endpoint_from_dsn
    from validators.endpoint import Endpoint, Secret
    from validators.errors import ValidatorError
    from validators.roles import create_reader
    from validators.runner import run_validators
    from validators.schema import compare

__all__ = [
    "Endpoint",
    "Finding",
    "FreshnessConfig",
    "RowCountRule",
    "SchemaConfig",
    "Secret",
    "SmokeQuery",
    "ValidationReport",
    "ValidatorError",
    "ValidatorsConfig",
    "capture_baseline",
    "compare",
    "connect",
    "create_reader",
    "endpoint_from_dsn",
    "load_baseline",
    "probe",
    "run_validators",
    "write_baseline",
]

_WHERE = {
    "Endpoint": "endpoint",
    "Secret": "endpoint",
    "Finding": "base",
    "ValidationReport": "base",
    "FreshnessConfig": "config",
    "RowCountRule": "config",
    "SchemaConfig": "config",
    "SmokeQuery": "config",
    "ValidatorsConfig": "config",
    "ValidatorError": "errors",
    "capture_baseline": "baseline",
    "load_baseline": "baseline",
    "write_baseline": "baseline",
    "compare": "schema",
    "connect": "connect",
    "probe": "connect",
    "endpoint_from_dsn": "dsn",
    "run_validators": "runner",
    "create_reader": "roles",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'validators' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"validators.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
