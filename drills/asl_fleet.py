"""A fleet of drills as one Step Functions execution: a ``Map`` over runbooks (``drill export-asl --fleet``).

Each iteration is the single-drill machine of :func:`drills.asl.build_definition`, unchanged but
for three things:

* its states are prefixed with the runbook's name (``orders.Restore``), and a ``Choice`` at the
  top of the iteration picks the runbook's own states: each keeps its literals (snapshot, subnet
  group, retries from its ``states:``), because ASL cannot parameterise a ``Retry``;
* its run id is ``<execution name>-<runbook>`` (the instance ``drill-<runbook>-<MD5 of that>``),
  so iterations never share an instance, a journal or an evidence file;
* its ``Succeed``/``Fail`` end states become ``Pass`` states that end the iteration with
  ``{"runbook", "verdict"}``: a ``Fail`` inside a ``Map`` would fail the ``Map`` and abort the other
  iterations mid-restore, skipping their teardown. The verdict of the fleet is decided after the
  ``Map``: it fails, naming the runbooks, if any drill did not pass.

The list of runbooks is fixed in the definition (a ``Pass`` state's result), never read from the
execution's input, so whoever starts an execution cannot choose what is restored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from drills.asl import Dialect, build_definition, instance_prefix
from drills.errors import InputError
from drills.runbook import LoadedRunbook

__all__ = ["build_fleet_definition"]


def _renamed(states: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The states with every name, and every reference to one, prefixed."""
    out: dict[str, Any] = {}
    for name, state in states.items():
        s = dict(state)
        for key in ("Next", "Default"):
            if key in s:
                s[key] = prefix + s[key]
        if "Choices" in s:
            s["Choices"] = [c | {"Next": prefix + c["Next"]} for c in s["Choices"]]
        if "Catch" in s:
            s["Catch"] = [c | {"Next": prefix + c["Next"]} for c in s["Catch"]]
        out[prefix + name] = s
    return out


def _ended(states: dict[str, Any], runbook: str) -> dict[str, Any]:
    """``Succeed``/``Fail`` → a ``Pass`` that ends the iteration with the runbook's verdict."""
    out: dict[str, Any] = {}
    for name, state in states.items():
        s = state
        if state["Type"] == "Succeed":
            s = {"Type": "Pass", "Result": {"runbook": runbook, "verdict": "passed"}, "End": True}
        elif state["Type"] == "Fail":
            failed = {"runbook": runbook, "verdict": "failed", "error": state.get("Error"), "cause": state.get("Cause")}
            s = {"Type": "Pass", "Result": failed, "End": True}
        out[name] = s
    return out


def build_fleet_definition(
    runbooks: Sequence[LoadedRunbook],
    *,
    queue_url: str,
    runbook_uris: Sequence[str],
    max_concurrency: int,
    dialect: Dialect = "aws",
    schedule: list[int] | None = None,
) -> dict[str, Any]:
    """One execution drills every runbook, at most ``max_concurrency`` at a time (see the module docstring)."""
    if not runbooks:
        raise InputError("export-asl --fleet: no runbook given")
    if max_concurrency < 1:
        raise InputError(f"--max-concurrency {max_concurrency}: at least 1")
    names = [lr.runbook.name for lr in runbooks]
    prefixes: dict[str, str] = {}
    for lr in runbooks:  # two runbooks whose instances could collide would share a teardown target
        p = instance_prefix(lr.runbook.name)
        if p in prefixes:
            raise InputError(
                f"{lr.path}: name {lr.runbook.name!r} gives the same instance names as {prefixes[p]!r}",
                hint="runbook names in a fleet must differ within their first 24 characters",
            )
        prefixes[p] = lr.runbook.name
    item_states: dict[str, Any] = {
        "Pick": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.runbook", "StringEquals": n, "Next": f"{n}.Init"} for n in names],
            "Default": "UnknownRunbook",
        },
        "UnknownRunbook": {
            "Type": "Pass",
            "Parameters": {"runbook.$": "$.runbook", "verdict": "failed", "error": "UnknownRunbook"},
            "End": True,
        },
    }
    timeout = 0
    for lr, uri in zip(runbooks, runbook_uris, strict=True):
        name = lr.runbook.name
        single = build_definition(
            lr,
            queue_url=queue_url,
            runbook_uri=uri,
            dialect=dialect,
            schedule=schedule,
            run_id=f"States.Format('{{}}-{{}}', $$.Execution.Name, '{name}')",
            state_prefix=f"{name}.",
        )
        item_states |= _renamed(_ended(single["States"], name), f"{name}.")
        timeout = max(timeout, int(single["TimeoutSeconds"]))
    batches = math.ceil(len(runbooks) / max_concurrency)
    return {
        "Comment": f"restore-drills: a fleet of {len(runbooks)} drills, {max_concurrency} at a time, "
        "exported by `drill export-asl --fleet`",
        "StartAt": "Fleet",
        "TimeoutSeconds": timeout * batches,
        "States": {
            "Fleet": {
                "Type": "Pass",
                "Result": {"runbooks": [{"runbook": n} for n in names]},
                "ResultPath": "$.fleet",
                "Next": "Drills",
            },
            "Drills": {
                "Type": "Map",
                "ItemsPath": "$.fleet.runbooks",
                "MaxConcurrency": max_concurrency,
                "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Pick", "States": item_states},
                "ResultPath": "$.results",
                "Next": "Summary",
            },
            "Summary": {
                "Type": "Pass",
                "Parameters": {"failed.$": "$.results[?(@.verdict != 'passed')]"},
                "ResultPath": "$.summary",
                "Next": "FleetVerdict",
            },
            "FleetVerdict": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.summary.failed[0]", "IsPresent": True, "Next": "FleetFailed"}],
                "Default": "FleetPassed",
            },
            "FleetPassed": {"Type": "Succeed"},
            "FleetFailed": {"Type": "Fail", "Error": "FleetFailed", "Cause": "a drill of the fleet did not pass"},
        },
    }
