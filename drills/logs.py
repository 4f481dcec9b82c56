"""structlog configuration: a chain of pure processors, one renderer at the end.

Two outputs: a human one for terminals (a line per state with its elapsed
time) and JSON lines for machines (``--log-format json``). Every string value
passes through :func:`scrub` first, so a DSN with a password that slipped
into an event never reaches the output.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from drills.scrub import scrub, scrub_tree

__all__ = ["configure", "scrub", "scrub_processor"]


_PLAIN = (str, int, float, bool, type(None), dict, list, tuple)


def scrub_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every value, at any depth, through the one scrubber (:mod:`drills.scrub`); fields named like a
    secret masked whole; any other object (an exception, a path) as its scrubbed text."""
    plain = {k: v if isinstance(v, _PLAIN) else str(v) for k, v in event_dict.items()}
    event_dict.update(scrub_tree(plain))
    return event_dict


class _HumanRenderer:
    """Terse lines for people: state transitions with their time, then anything else."""

    def __call__(self, _logger: Any, _name: str, ev: MutableMapping[str, Any]) -> str:
        event = ev.pop("event", "")
        level = ev.pop("level", "info")
        ev.pop("timestamp", None)
        ev.pop("run_id", None)
        if event == "state_entered":
            n = ev.get("attempt", 1)
            return f"  → {ev.get('state')}" + (f" (attempt {n})" if n and n > 1 else "") + " …"
        if event == "state_exited":
            mark = {"ok": "✓", "retry": "↻", "error": "✗", "failed": "✗"}.get(str(ev.get("outcome")), "·")
            secs = (ev.get("duration_ms") or 0) / 1000
            tail = f"  {ev['error']}" if ev.get("error") else ""
            return f"  {mark} {ev.get('state'):<12} {secs:8.2f}s{tail}"
        rest = " ".join(f"{k}={v}" for k, v in ev.items() if v is not None)
        prefix = "" if level == "info" else f"[{level}] "
        return f"  {prefix}{event} {rest}".rstrip()


def configure(fmt: str = "console", level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else _HumanRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
