"""Secrets must never reach signed evidence."""

from __future__ import annotations

import json

import pytest

from drills.errors import EvidenceError
from drills.evidence import assert_no_secrets, scrub_dsn


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        (
            "postgres://u:s3cr3t@db.internal:5432/app?sslmode=require",
            "postgres://u:***@db.internal:5432/app?sslmode=require",
        ),
        ("mysql://root:hunter2@127.0.0.1:3306/shop", "mysql://root:***@127.0.0.1:3306/shop"),
        ("mysql+pymysql://root:hunter2@h/shop", "mysql+pymysql://root:***@h/shop"),
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("postgresql://:pw@host/db", "postgresql://:***@host/db"),
        (
            "error: could not connect to postgresql://u:pw@h/db: refused",
            "error: could not connect to postgresql://u:***@h/db: refused",
        ),
        ("host=db port=5432 password=s3cret user=app", "host=db port=5432 password=*** user=app"),
        ("host=db password='s3 cr\\'et' user=app", "host=db password=*** user=app"),
        ("PASSWORD = abc dbname=x", "PASSWORD = *** dbname=x"),
        ("postgresql://u@h/db?password=abc&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("Server=h;Pwd=abc;Database=d", "Server=h;Pwd=***"),  # over-masked: libpq values may hold `;`
        ("PGPASSWORD=abc psql -h h", "PGPASSWORD=*** psql -h h"),
    ],
)
def test_scrub_dsn_masks_passwords(text: str, expected: str) -> None:
    assert scrub_dsn(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://user@host/db",
        "postgresql://host:5432/db",
        "https://example.com/a:b",
        "no dsn here, just a password prompt",
        "password=",
    ],
)
def test_scrub_dsn_leaves_text_without_passwords_alone(text: str) -> None:
    assert scrub_dsn(text) == text


def test_secret_anywhere_is_refused_without_echoing_it() -> None:
    evidence = {"target": {"notes": ["ok", "connected with hunter2 as root"]}}
    with pytest.raises(EvidenceError) as info:
        assert_no_secrets(evidence, ["other", "hunter2"])
    assert "$.target.notes[1]" in str(info.value)
    assert "secret #2 of 2" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_in_a_key_or_a_number_is_found() -> None:
    with pytest.raises(EvidenceError, match="key"):
        assert_no_secrets({"hunter2": 1}, ["hunter2"])
    with pytest.raises(EvidenceError, match=r"\$\.pin"):
        assert_no_secrets({"pin": 987654}, ["987654"])


def test_secret_inside_embedded_json_text_is_found() -> None:
    secret = 'pa"ss\\word'
    evidence = {"driver_error": json.dumps({"dsn": f"password={secret}"})}
    assert secret not in evidence["driver_error"]
    with pytest.raises(EvidenceError, match="driver_error"):
        assert_no_secrets(evidence, [secret])


def test_clean_evidence_and_empty_secrets_pass() -> None:
    assert_no_secrets({"a": "b", "n": [1, None, True]}, ["hunter2", ""])
    assert_no_secrets({"a": "b"}, [])
