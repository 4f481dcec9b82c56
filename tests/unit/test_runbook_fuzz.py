"""Property: `drill validate` answers every document with exit 0 or 2 and one line, never a traceback.

Three families of documents: valid runbooks generated from the model's own rules (they must pass:
a loader that refuses good input is broken too), those same runbooks mutated character by character
with YAML's sharp edges (anchors, aliases, tags, merges, control characters, duplicate keys, odd
numbers), and hostile ones (alias bombs, deep nesting, random bytes). Each is run in-process
through ``drills.cli.main`` exactly as the command line would.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drills.cli import main

# ---------------------------------------------------------------- valid runbooks

_names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
_paths = st.from_regex(r"[a-z][a-z0-9_/.-]{0,20}", fullmatch=True)
_target = st.one_of(
    st.just("latest"), st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.isoformat())
)

_sources = st.one_of(
    st.fixed_dictionaries(
        {"kind": st.just("postgres-pitr"), "base_backup": _paths, "wal_archive": _paths, "target_time": _target}
    ),
    st.fixed_dictionaries(
        {"kind": st.just("postgres-dump"), "archive": _paths},
        optional={"jobs": st.integers(1, 64), "database": _names},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("mariadb-pitr"), "backup": _paths, "binlogs": _paths, "target_time": _target}
    ),
    st.fixed_dictionaries({"kind": st.just("mariadb-dump"), "dump": _paths}),
)
_state_policy = st.fixed_dictionaries(
    {},
    optional={
        "attempts": st.integers(1, 50),
        "timeout_seconds": st.floats(0.001, 2_073_600),
        "backoff_initial_seconds": st.floats(0, 3600),
        "backoff_max_seconds": st.integers(0, 3600),
    },
)
_validators = st.fixed_dictionaries(
    {},
    optional={
        "row_counts": st.dictionaries(
            _names,
            st.fixed_dictionaries({"min": st.integers(0, 2**53 - 1)}, optional={"within_pct": st.floats(0, 1000)}),
            max_size=3,
        ),
        "smoke": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(min_size=1, max_size=10).filter(str.isprintable),
                    "sql": st.just("select 1"),
                    "expect": st.one_of(
                        st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(), st.text(max_size=5).filter(str.isprintable)
                    ),
                }
            ),
            max_size=2,
        ),
        "parallelism": st.integers(1, 32),
    },
)
_runbooks = st.fixed_dictionaries(
    {
        "name": _names,
        "source": _sources,
        "objectives": st.fixed_dictionaries(
            {"rto_seconds": st.integers(1, 2_073_600)}, optional={"rpo_seconds": st.integers(0, 3660 * 86400)}
        ),
    },
    optional={
        "description": st.text(max_size=30).filter(lambda s: s.isprintable()),
        "deadline_seconds": st.integers(1, 2_073_600),
        "states": st.dictionaries(st.sampled_from(["restore", "await_ready", "validate"]), _state_policy, max_size=2),
        "tags": st.dictionaries(_names, _names, max_size=3),
        "validators": _validators,
    },
)


def dump(doc: dict[str, Any], flow: bool) -> str:
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True, sort_keys=False)


# ---------------------------------------------------------------- mutations and hostile documents

_SHARP = [
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!python/object:os.system ",
    "!!set ",
    "? ",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    "|\n",
    ">-\n",
    "\t",
    "\n",
    "\n  ",
    "#",
    "%YAML 1.1\n",
    "---\n",
    "...\n",
    "\x00",
    "\\0",
    "\\x07",
    "\\ud800",
    "\x1b",
    "\u202e",
    "\ufeff",
    "true",
    "yes",
    "~",
    ".inf",
    "-.inf",
    ".nan",
    "0x7fffffffffffffff",
    "1e400",
    "1.0e+400",
    "9" * 60,
    "2026-13-45",
    "2026-02-30T25:61:00Z",
    "-1",
    "0",
    "name: x\n",
    "kind: nope\n",
    "rto_seconds: 1\n",
    "\u00e9",
    "\U0001f600",
    "\\N",
    "\\_",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = dump(draw(_runbooks), draw(st.booleans()))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "delete", "replace", "duplicate-line"]))
        if how == "insert":
            text = text[:pos] + draw(st.sampled_from(_SHARP) | st.text(max_size=3)) + text[pos:]
        elif how == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
        elif how == "replace":
            text = text[:pos] + draw(st.sampled_from(_SHARP)) + text[pos + draw(st.integers(1, 8)) :]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
            text = "".join(lines)
    return text


_HEAD = "name: x\nsource: {kind: postgres-dump, archive: a}\nobjectives: {rto_seconds: 5}\n"


@st.composite
def laughs(draw: st.DrawFn) -> str:
    levels, width = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    rows = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return _HEAD + "\n".join(rows) + "\n"


@st.composite
def nesting(draw: st.DrawFn) -> str:
    depth = draw(st.integers(1, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
    if opener == "- ":  # block style: indentation, not brackets
        depth = min(depth, 200)
        return _HEAD + "tags:\n" + "".join("  " * i + "- \n" for i in range(depth)) + "  " * depth + "x\n"
    return _HEAD + "tags: " + opener * depth + "x" * (opener != "[") + closer * depth + "\n"


@st.composite
def sharp_keys(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(["name", "tags", "source", "objectives", "a", "1", "true", "~"]), max_size=9))
    return _HEAD + "".join(f"{k}: {draw(st.sampled_from(_SHARP))}\n" for k in keys)


hostile = st.one_of(
    laughs(),
    nesting(),
    st.sampled_from(["tags: &t [*t]\n", "tags: &t {a: *t}\n", "t: &t {<<: *t}\n"]).map(lambda c: _HEAD + c),
    st.binary(max_size=300),
    st.text(max_size=300),
    sharp_keys(),
)


# ---------------------------------------------------------------- the property


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rd-fuzz-") as d:
        yield Path(d)


def validate(workdir: Path, doc: str | bytes) -> tuple[int, str, str]:
    path = workdir / "runbook.yaml"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    else:
        path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", "--no-check-paths", str(path)])
    return code, out.getvalue(), err.getvalue()


def assert_answered(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert out == "" and err.startswith("RunbookError: ") and err.count("\n") == 1, err
    else:
        assert err == "" and out.count("\n") == 1 and ": ok (" in out


# A slow machine shared with other test runs: a second per document is still 100x what one takes.
FUZZ = settings(
    deadline=timedelta(seconds=1), max_examples=150, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(doc=_runbooks, flow=st.booleans())
def test_valid_runbooks_pass(workdir: Path, doc: dict[str, Any], flow: bool) -> None:
    code, out, err = validate(workdir, dump(doc, flow))
    assert_answered(code, out, err)
    assert code == 0, err


@FUZZ
@given(doc=mutated())
def test_mutated_runbooks_pass_or_are_refused_in_one_line(workdir: Path, doc: str) -> None:
    assert_answered(*validate(workdir, doc))


@FUZZ
@given(doc=hostile)
def test_hostile_documents_are_refused_in_one_line(workdir: Path, doc: str | bytes) -> None:
    assert_answered(*validate(workdir, doc))
