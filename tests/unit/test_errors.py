"""The exception tree drawn in drills/errors.py is the one the code has."""

from __future__ import annotations

import re

from drills import errors


def test_every_error_is_drawn_in_the_docstring_with_its_exit_code() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.DrillError)
        line = next((ln for ln in doc.splitlines() if re.search(rf"\b{name}\b", ln)), None)
        assert line is not None, f"{name} is missing from the tree in drills/errors.py"
        code = re.search(r"exit (\d+)", line)
        if code:  # a subclass line without a code inherits its parent's
            assert int(code.group(1)) == cls.exit_code, name


def test_exit_codes_follow_the_cli_contract() -> None:
    assert errors.RunbookError("f", 1, "x", "bad").exit_code == 2
    assert errors.PreflightError("p").exit_code == 2
    assert errors.RestoreFailed("r").exit_code == 3
    assert errors.TeardownError("t").exit_code == 3
    assert errors.ValidationError("v").exit_code == 1
    assert errors.VerificationError("v").exit_code == 1
    assert errors.Interrupted("i").exit_code == 130


def test_runbook_error_reads_file_line_field_problem_hint() -> None:
    e = errors.RunbookError("rb.yaml", 7, "objectives.rto_seconds", "not an integer", hint="write seconds")
    assert str(e) == "rb.yaml:7: objectives.rto_seconds: not an integer (write seconds)"
