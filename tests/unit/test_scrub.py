"""One scrubber for logs and evidence, and no password shape it lets through.

Issue 8: the log scrubber turned `postgresql://app:p@ss@db/shop` into `app:***@ss@db`, the tail of
the password in clear, while a correct scrubber sat unused in evidence/redact.py. Now both paths
call drills.scrub; the properties below feed it generated passwords full of `@ : / % ?`, quotes,
backslashes and unicode, in every spelling a password takes in text.
"""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from drills import logs
from drills.evidence import redact
from drills.scrub import scrub, scrub_tree

SHARP = "@:/%?&#='\"\\ "
_passwords = st.text(
    alphabet=st.one_of(
        st.sampled_from(SHARP),
        st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    ),
    min_size=1,
    max_size=24,
)
_no_space = _passwords.filter(lambda p: not any(c.isspace() for c in p))


def libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_logs_and_evidence_use_the_same_scrubber() -> None:
    assert logs.scrub is scrub and redact.scrub_dsn is scrub and redact.scrub_record is scrub_tree


def test_the_probe_from_the_issue() -> None:
    assert scrub("postgresql://app:p@ss@db/shop") == "postgresql://app:***@db/shop"


@given(pw=_no_space)
def test_raw_password_in_a_url(pw: str) -> None:
    text = f"connect to postgresql://app:{pw}@db.internal:5432/shop failed: timeout"
    assert scrub(text) == "connect to postgresql://app:***@db.internal:5432/shop failed: timeout"


@given(pw=_passwords)
def test_percent_encoded_password_in_a_url(pw: str) -> None:
    dsn = f"mysql://root:{quote(pw, safe='')}@127.0.0.1:3306/shop?ssl-mode=REQUIRED"
    assert scrub(dsn) == "mysql://root:***@127.0.0.1:3306/shop?ssl-mode=REQUIRED"


@given(pw=_passwords)
def test_password_in_a_url_query(pw: str) -> None:
    dsn = f"postgresql://app@db/shop?password={quote(pw, safe='')}&sslmode=require"
    assert scrub(dsn) == "postgresql://app@db/shop?password=***&sslmode=require"


@given(pw=_passwords, key=st.sampled_from(["password", "PGPASSWORD", "MYSQL_PWD", "Pwd", "db_password"]))
def test_quoted_key_value(pw: str, key: str) -> None:
    text = f"host=db {key}={libpq_quote(pw)} user=app"
    assert scrub(text) == f"host=db {key}=*** user=app"


@given(pw=_no_space.filter(lambda p: p[0] not in "'\""))
def test_unquoted_key_value(pw: str) -> None:
    assert scrub(f"host=db password={pw} user=app") == "host=db password=*** user=app"


@given(pw=_passwords)
def test_json_spelling(pw: str) -> None:
    text = json.dumps({"password": pw, "user": "app"}, ensure_ascii=False)
    assert scrub(text) == '{"password": *** "user": "app"}'  # over-masked to the next space: the comma


@settings(max_examples=50)
@given(pw=_no_space)
def test_log_lines_in_both_formats_carry_no_password(pw: str) -> None:
    for fmt in ("json", "console"):
        out = io.StringIO()
        logs.configure(fmt, "info", stream=out)
        log = structlog.get_logger("t")
        log.warning(
            "connect_failed",
            dsn=f"postgresql://app:{pw}@db/shop",
            password=pw,
            detail={"argv": ["psql", f"postgresql://u:{pw}@h/db"], "conninfo": f"host=h password={libpq_quote(pw)}"},
            error=ValueError(f"bad dsn mysql://root:{pw}@h/db"),
        )
        line = out.getvalue()
        for spelling in (pw, json.dumps(pw)[1:-1], json.dumps(pw, ensure_ascii=False)[1:-1]):  # JSON escapes it
            assert f":{spelling}@" not in line and f"={libpq_quote(spelling)}" not in line
        assert "postgresql://app:***@db/shop" in line
        assert "password=***" in line or '"password": "***"' in line


@given(pw=_no_space)
def test_evidence_records_carry_no_password(pw: str) -> None:
    record = {
        "error": f"could not connect to postgresql://app:{pw}@db/shop",
        "findings": [{"detail": f"host=db password={libpq_quote(pw)}"}],
        "iam_token": pw,
        "rows": 42,
        "passed": True,
    }
    clean = scrub_tree(record)
    assert clean == {
        "error": "could not connect to postgresql://app:***@db/shop",
        "findings": [{"detail": "host=db password=***"}],
        "iam_token": "***",
        "rows": 42,
        "passed": True,
    }
