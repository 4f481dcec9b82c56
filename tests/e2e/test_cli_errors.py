"""Every command, given a user's mistake or a broken environment: one line on stderr, the right code.

The probes of issue 8 printed tracebacks with exit 1 (which means "the drill failed"): an unwritable
journal home, every `drill baseline capture` error, `drill sweep` without AWS credentials and
`drill verify ... | head`. Exit codes: 2 bad input (nothing started), 3 environment, 141 the reader
of our output went away (128 + SIGPIPE, as for any Unix tool).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drills.evidence import generate_keypair, load_signer, subject_for_bytes, write_evidence

NO_AWS = {
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_DEFAULT_REGION": "eu-west-1",
}
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL")


def drill(
    *args: str, env: dict[str, str] | None = None, stdout: Any = subprocess.PIPE, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in AWS_VARS and not k.startswith(("PG", "MYSQL"))}
    return subprocess.run(
        [sys.executable, "-m", "drills.cli", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        env={**base, **(env or {})},
    )


def fails(res: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command exited with `code` and said why in one line of stderr, naming `words`."""
    err = res.stderr
    assert "Traceback" not in err, err
    assert res.returncode == code, (res.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def unusable_home(tmp_path: Path) -> Path:
    """A state home that cannot be created: its parent is a file (root ignores permission bits)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    return blocker / "home"


# ---------------------------------------------------------------- the journal home


def test_run_with_an_unusable_home_starts_nothing_and_says_where(tmp_path: Path, unusable_home: Path) -> None:
    runbook = tmp_path / "rb.yaml"
    runbook.write_text(
        textwrap.dedent(
            """\
            name: shop
            source: {kind: postgres-dump, archive: shop.dump}
            objectives: {rto_seconds: 60}
            """
        )
    )
    res = drill("run", str(runbook), env={"RESTORE_DRILLS_HOME": str(unusable_home)})
    fails(res, 2, "PreflightError", str(unusable_home), "RESTORE_DRILLS_HOME")


def test_teardown_and_runs_with_an_unusable_home(unusable_home: Path) -> None:
    env = {"RESTORE_DRILLS_HOME": str(unusable_home)}
    fails(drill("teardown", "20260101T000000Z-abcdef", env=env), 2, "no run")
    res = drill("runs", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr  # nothing was ever run there


# ---------------------------------------------------------------- baseline capture on real servers


def capture(dsn: str, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return drill("baseline", "capture", "--dsn", dsn, "--out", str(out), env=env)


@pytest.fixture
def pg_db(pg_server: Any) -> Iterator[Any]:
    ep = pg_server.new_database("err")
    pg_server.run("create table t (id int)", "insert into t values (1), (2)", database=ep.database)
    yield ep
    pg_server.drop_database(ep.database)


def test_baseline_wrong_password_is_bad_input_without_the_password(pg_server: Any, tmp_path: Path) -> None:
    ep = pg_server.endpoint
    res = capture(f"postgresql://{ep.user}:Wr0ng-pw@/{ep.database}?host={ep.host}&port={ep.port}", tmp_path / "b")
    line = fails(res, 2, "InputError", "password authentication failed", "PGPASSWORD")
    assert "Wr0ng-pw" not in line and not (tmp_path / "b").exists()


def test_baseline_unknown_database_is_bad_input(pg_server: Any, tmp_path: Path) -> None:
    ep = pg_server.endpoint
    dsn = f"host={ep.host} port={ep.port} user={ep.user} dbname=nosuch"
    fails(capture(dsn, tmp_path / "b", PGPASSWORD=pg_server.password), 2, "InputError", '"nosuch" does not exist')


def test_baseline_refused_connection_is_the_environment(tmp_path: Path) -> None:
    fails(capture("postgresql://app@127.0.0.1:1/shop", tmp_path / "b", PGPASSWORD="x"), 3, "Connection refused")
    fails(capture("host=/nonexistent-socket-dir dbname=shop", tmp_path / "b"), 3, "InfrastructureError")
    fails(capture("mysql://app:x@127.0.0.1:1/shop", tmp_path / "b"), 3, "InfrastructureError", "2003")


def test_baseline_key_value_dsn_and_port_parameter_reach_the_server(pg_server: Any, pg_db: Any, tmp_path: Path) -> None:
    ep = pg_db
    # the probe: a libpq key=value string gave a traceback
    kv = f"host={ep.host} port={ep.port} dbname='{ep.database}' user={ep.user}"
    res = capture(kv, tmp_path / "kv.json", PGPASSWORD=pg_server.password)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "kv.json").read_text())["row_counts"] == {"public.t": 2}
    # the probe: ?port= was ignored, so the capture knocked on the default port's socket
    assert ep.port != 5432
    url = f"postgresql://{ep.user}@/{ep.database}?host={ep.host}&port={ep.port}"
    res = capture(url, tmp_path / "url.json", PGPASSWORD=pg_server.password)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "url.json").read_text())["row_counts"] == {"public.t": 2}


def test_baseline_unusable_dsn_and_out(pg_server: Any, tmp_path: Path) -> None:
    fails(capture("db.example.com", tmp_path / "b"), 2, "InputError", "--dsn")
    fails(capture("postgresql://db/x?sslmod=require", tmp_path / "b"), 2, "unsupported postgres parameter 'sslmod'")
    ep = pg_server.endpoint
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = capture(f"host={ep.host} port={ep.port} user={ep.user}", blocker / "b.json", PGPASSWORD=pg_server.password)
    fails(res, 2, "InputError", "--out")


def test_baseline_mariadb_wrong_password_and_unknown_database(mariadb_server: Any, tmp_path: Path) -> None:
    ep = mariadb_server.endpoint
    res = capture(f"mysql://{ep.user}:Wr0ng-pw@localhost/mysql?unix_socket={ep.unix_socket}", tmp_path / "b")
    line = fails(res, 2, "InputError", "1045", "MYSQL_PWD")
    assert "Wr0ng-pw" not in line
    res = capture(
        f"mysql://{ep.user}@localhost/nosuch?unix_socket={ep.unix_socket}",
        tmp_path / "b",
        MYSQL_PWD=mariadb_server.password,
    )
    fails(res, 2, "InputError", "1049")


# ---------------------------------------------------------------- AWS without credentials


def test_sweep_without_aws_credentials(tmp_path: Path) -> None:
    res = drill("sweep", "--scope", "aws", env={**NO_AWS, "RESTORE_DRILLS_HOME": str(tmp_path / "home")}, timeout=60)
    fails(res, 2, "credentials")


def test_kms_pubkey_without_aws_credentials(tmp_path: Path) -> None:
    res = drill("kms-pubkey", "--key-id", "0" * 8 + "-0000-0000-0000-" + "0" * 12, "--out", str(tmp_path / "k.pub"),
                env=NO_AWS, timeout=60)  # fmt: skip
    fails(res, 3, "credentials")


# ---------------------------------------------------------------- output that nobody reads


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ev")
    generate_keypair(d / "k.key")
    predicate = {
        "schema_version": 1,
        "drill": {"id": "run-1"},
        "runbook": {"name": "rb"},
        "results": {"verdict": "passed"},
    }
    path = write_evidence(predicate, [subject_for_bytes("rb.yaml", b"x")], d, "run-1", load_signer(d / "k.key"))
    return path, d / "k.pub"


def closed_pipe() -> int:
    """A pipe whose reader is already gone: the first write gets EPIPE, like `| head` after it quit."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize("command", ["verify", "report", "schema"])
def test_a_reader_that_went_away_ends_the_command_quietly(evidence: tuple[Path, Path], command: str) -> None:
    path, pub = evidence
    args = {"verify": ["verify", str(path), "--key", str(pub)], "report": ["report", str(path), "--key", str(pub)]}
    w = closed_pipe()
    try:
        res = drill(*args.get(command, [command]), stdout=w)
    finally:
        os.close(w)
    assert res.returncode == 141, res.stderr
    assert res.stderr == ""


@pytest.mark.parametrize("command", ["verify", "runs --json"])
def test_a_closed_stdout_is_not_an_error(evidence: tuple[Path, Path], tmp_path: Path, command: str) -> None:
    """`drill ... >&-` (cron jobs do this): the work is done, the output has nowhere to go."""
    path, pub = evidence
    args = {"verify": ["verify", str(path), "--key", str(pub)]}.get(command, command.split())
    script = 'exec "$0" -m drills.cli "$@" >&-'
    env = {**os.environ, "RESTORE_DRILLS_HOME": str(tmp_path / "home")}
    res = subprocess.run(
        ["sh", "-c", script, sys.executable, *args], capture_output=True, text=True, check=False, env=env, timeout=60
    )
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_verify_and_report_errors(evidence: tuple[Path, Path], tmp_path: Path) -> None:
    path, pub = evidence
    fails(drill("verify", str(tmp_path / "missing.json"), "--key", str(pub)), 2, "missing.json")
    fails(drill("verify", str(path), "--key", str(tmp_path / "missing.pub")), 2, "missing.pub")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff not json")
    fails(drill("verify", str(garbage), "--key", str(pub)), 1, "VerificationError")
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails(drill("report", str(path), "--key", str(pub), "--out", str(blocker / "r.md")), 2, "--out")
    # signed with the trusted key, but not a drill record (no runbook): no report, the field named
    odd = write_evidence({"drill": {"id": "run-2"}, "results": {"verdict": "passed"}}, [subject_for_bytes("rb", b"x")],
                         tmp_path, "run-2", load_signer(pub.with_suffix(".key")))  # fmt: skip
    fails(drill("report", str(odd), "--key", str(pub)), 3, "does not fit its schema at runbook")


def test_keygen_where_no_file_can_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    fails(drill("keygen", "--out", str(blocker / "k.key")), 3, "EvidenceError")


def test_validate_missing_and_unreadable_runbooks(tmp_path: Path) -> None:
    fails(drill("validate", str(tmp_path / "nope.yaml")), 2, "nope.yaml")
    fails(drill("validate", str(tmp_path)), 2, "cannot read the runbook")
