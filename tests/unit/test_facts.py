"""One isolation fact shape for every backend; the evidence keeps the form it had for each."""

from __future__ import annotations

from drills.backends.base import Fact


def test_a_fact_read_back_from_a_server_carries_its_value_even_when_that_is_none() -> None:
    fact = Fact("server_user", "mariadbd pid 7", False, "runs as root", value=None)
    assert fact.to_dict() == {
        "check": "server_user",
        "subject": "mariadbd pid 7",
        "value": None,
        "passed": False,
        "detail": "runs as root",
    }


def test_a_fact_decided_without_a_single_value_has_no_value_key() -> None:
    """The AWS network checks: their evidence has no ``value`` and must not grow one."""
    assert Fact("no-egress-route", "subnet-1", True, "no route out").to_dict() == {
        "check": "no-egress-route",
        "subject": "subnet-1",
        "passed": True,
        "detail": "no route out",
    }
