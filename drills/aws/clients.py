"""boto3 clients whose every API operation goes through :class:`drills.aws.calls.AwsCaller`.

The backends call ``call(rds.describe_db_instances, ...)`` themselves. Code that only holds a
client (the evidence store on S3, a level below ``drills.aws``; metrics and notifications, which
take any client) gets a :class:`CalledClient` instead: the same object to call, but each operation
runs through a fresh ``AwsCaller`` with its own time budget, so retries, throttling and the
``TransientError`` after the last attempt are the same as everywhere else, and botocore's own
retries are off (:func:`drills.aws.calls.client_config`). Only API operations are routed
(``meta.method_to_api_mapping``); helpers such as ``get_paginator`` are not, so code that wants its
pages retried calls the list operation itself.

The boto3 client is created at the first operation: building a store must not need boto3,
credentials or a region.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drills.aws.calls import AwsCaller, client_config
from drills.clock import Clock, SystemClock

__all__ = ["CalledClient", "aws_client"]


class CalledClient:
    """A boto3 client whose API operations go through :class:`AwsCaller` (``calls``: attempts made)."""

    def __init__(
        self,
        make: Callable[[], Any],
        clock: Clock,
        *,
        budget_seconds: float,
        attempts: int = 8,
        max_backoff: float = 20.0,
    ) -> None:
        self._make = make
        self._client: Any = None
        self.clock = clock
        self.budget_seconds = budget_seconds
        self.attempts = attempts
        self.max_backoff = max_backoff
        self.calls = 0

    @property
    def raw(self) -> Any:
        """The boto3 client itself (created now if it was not yet)."""
        if self._client is None:
            self._client = self._make()
        return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        client = self.raw
        attr = getattr(client, name)
        if name not in client.meta.method_to_api_mapping:
            return attr

        def operation(**kwargs: Any) -> Any:
            deadline = self.clock.monotonic_ns() + int(self.budget_seconds * 1e9)
            caller = AwsCaller(self.clock, deadline, attempts=self.attempts, max_backoff=self.max_backoff)
            try:
                return caller(attr, **kwargs)
            finally:
                self.calls += caller.calls

        operation.__name__ = name
        return operation


def aws_client(
    service: str,
    *,
    session: Any = None,
    region: str | None = None,
    clock: Clock | None = None,
    budget_seconds: float = 60.0,
    attempts: int = 8,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
) -> CalledClient:
    """A :class:`CalledClient` for ``service`` from ``session`` (default: the environment's)."""

    def make() -> Any:
        import boto3  # lazy: the CLI starts without boto3

        config = client_config()
        if connect_timeout is not None or read_timeout is not None:
            from botocore.config import Config

            config = config.merge(
                Config(
                    connect_timeout=connect_timeout or config.connect_timeout,
                    read_timeout=read_timeout or config.read_timeout,
                )
            )
        s: Any = session or boto3.Session()
        return s.client(service, region_name=region, config=config) if region else s.client(service, config=config)

    return CalledClient(make, clock or SystemClock(), budget_seconds=budget_seconds, attempts=attempts)
