"""JUnit XML of a drill (`drill run --junit FILE`), for the CI systems that already show test reports.

One ``<testsuite>`` per drill: every validator finding is a test case
(``classname`` = the validator, ``name`` = the check), and so are the RTO
and RPO objectives, the restore itself (a drill that never reached its
validators must not read as "0 tests, 0 failures") and teardown. A finding
that failed carries its expected and actual values and detail; the suite's
properties name the run, the runbook and the evidence file.

Pure: the result's JSON (``RunResult.to_json()``) in, XML bytes out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree as ET

__all__ = ["render_junit"]


def _case(suite: ET.Element, classname: str, name: str, ok: bool | None, message: str, *, seconds: float = 0.0) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    if ok is None:
        ET.SubElement(case, "skipped", message=message)
    elif not ok:
        ET.SubElement(case, "failure", message=message.splitlines()[0][:500] if message else "failed").text = message


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def render_junit(result: Mapping[str, Any], runbook: str) -> bytes:
    """The JUnit XML document of one drill result (``RunResult.to_json()``)."""
    suite = ET.Element("testsuite", name=f"restore-drill {runbook}")
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "verdict", "evidence"):
        ET.SubElement(props, "property", name=key, value=str(result.get(key)))
    findings = result.get("findings") or []
    state, error = result.get("failed_state"), result.get("error") or ""
    early = state in ("preflight", "restore", "await_ready", "connect")
    _case(suite, "drill", "restore, ready and connected", not early, f"{state}: {error}" if early else "")
    if state in ("validate", "measure", "evidence"):  # an error past the restore that no finding shows
        _case(suite, "drill", f"{state} completed", False, f"{state}: {error}")
    for f in findings:
        detail = f.get("detail") or ""
        message = "\n".join(
            x
            for x in (
                f"expected {_value(f.get('expected'))}, got {_value(f.get('actual'))}" if "expected" in f else "",
                detail,
            )
            if x
        )
        _case(
            suite,
            str(f.get("validator")),
            str(f.get("check")),
            bool(f.get("passed")),
            message,
            seconds=(f.get("duration_ms") or 0) / 1000,
        )
    rto, rto_obj = result.get("rto_seconds"), result.get("rto_objective_seconds")
    _case(
        suite,
        "objectives",
        f"RTO within {rto_obj}s",
        None if rto is None else bool(result.get("rto_met")),
        "not measured: the drill did not validate" if rto is None else f"achieved {rto:.3f}s, objective {rto_obj}s",
        seconds=rto or 0.0,
    )
    rpo, rpo_obj = result.get("rpo_seconds"), result.get("rpo_objective_seconds")
    if rpo_obj is not None:
        met = result.get("rpo_met")
        _case(
            suite,
            "objectives",
            f"RPO within {rpo_obj}s",
            None if met is None else bool(met),
            "not measured" if rpo is None else f"achieved {rpo:.3f}s, objective {rpo_obj}s",
        )
    torn = state != "teardown"
    _case(suite, "drill", "teardown removed everything", torn, "" if torn else error)
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("errors", "0")
    out: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return out
