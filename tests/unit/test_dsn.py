"""`--dsn` as libpq and MySQL users write it: every part honoured, or refused by name, never ignored.

Issue 8 found `?port=` silently dropped (the capture went to the default port) and a libpq
key=value string (`host=/tmp port=5432 dbname=x`) refused with a traceback.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from validators.dsn import endpoint_from_dsn
from validators.errors import ValidatorError


def parts(dsn: str, environ: dict[str, str] | None = None) -> tuple[object, ...]:
    ep = endpoint_from_dsn(dsn, environ=environ or {})
    pw = ep.password.reveal() if ep.password else None
    return (ep.engine, ep.host, ep.port, ep.database, ep.user, pw, ep.unix_socket, ep.options)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        # the probe: ?port= was ignored
        ("postgresql://app@/shop?host=/tmp/sock&port=6543", ("postgres", "/tmp/sock", 6543, "shop", "app")),
        ("postgresql://app@db:5433/shop?port=6543", ("postgres", "db", 6543, "shop", "app")),  # query wins (libpq)
        ("postgres://app@db.internal:6543/shop", ("postgres", "db.internal", 6543, "shop", "app")),
        ("postgresql://%2FRun%2FPg/shop", ("postgres", "/Run/Pg", 5432, "shop", "postgres")),  # case kept
        ("postgresql://[::1]:6000/shop", ("postgres", "::1", 6000, "shop", "postgres")),
        ("postgresql://", ("postgres", "/var/run/postgresql", 5432, "postgres", "postgres")),
        ("postgresql:///shop?user=ro&dbname=other", ("postgres", "/var/run/postgresql", 5432, "other", "ro")),
        # the probe: key=value gave a traceback
        ("host=/tmp port=5432 dbname=x", ("postgres", "/tmp", 5432, "x", "postgres")),
        ("  host = db  port=7000\tdbname='my db' user=app ", ("postgres", "db", 7000, "my db", "app")),
        (
            "mysql://root@localhost/shop?unix_socket=/run/mysqld/mysqld.sock",
            ("mysql", "localhost", 3306, "shop", "root"),
        ),
        ("mariadb://app@db:3307/shop", ("mysql", "db", 3307, "shop", "app")),
        ("mysql://app@db/shop?port=3310&socket=/s.sock", ("mysql", "db", 3310, "shop", "app")),
    ],
)
def test_every_form_lands_where_it_says(dsn: str, expected: tuple[object, ...]) -> None:
    assert parts(dsn)[:5] == expected


def test_sockets_and_tls_are_handed_on() -> None:
    assert parts("mysql://r@localhost/shop?unix_socket=/run/m.sock")[6] == "/run/m.sock"
    assert parts("postgresql://db/shop?sslmode=require")[7] == {"sslmode": "require"}
    assert parts("host=db sslmode=verify-full sslrootcert=/ca.pem")[7] == {
        "sslmode": "verify-full",
        "sslrootcert": "/ca.pem",
    }
    assert parts("mysql://r@db/shop?ssl-mode=REQUIRED")[7] == {"tls": "required"}
    assert parts("mysql://r@db/shop?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem")[7] == {"tls_ca": "/ca.pem"}


def test_the_password_comes_from_the_string_else_the_environment() -> None:
    assert parts("postgresql://app:p%40ss%3Aw%2Fd@db/shop")[5] == "p@ss:w/d"
    assert parts(r"host=db password='it\'s a \\ secret'")[5] == "it's a \\ secret"
    assert parts("host=db", {"PGPASSWORD": "env"})[5] == "env"
    assert parts("mysql://r@db/shop", {"MYSQL_PWD": "my"})[5] == "my"


@pytest.mark.parametrize(
    ("dsn", "words"),
    [
        ("postgresql://db/shop?application_nam=x", "unsupported postgres parameter 'application_nam'"),
        ("host=db pasword=hunter2", "unsupported postgres parameter 'pasword'"),
        ("mysql://r@db/shop?sslmode=require", "unsupported mysql parameter 'sslmode'"),
        ("postgresql://db/shop?sslmode=maybe", "sslmode must be one of"),
        ("postgresql://db/shop?sslmode=verify-full", "needs sslrootcert"),
        ("postgresql://db:99999/shop", "port must be a number"),
        ("postgresql://db/shop?port=abc", "port must be a number"),
        ("postgresql://a,b/shop", "several hosts"),
        ("host=a,b", "several hosts"),
        ("oracle://x/y", "unsupported URL scheme 'oracle'"),
        ("mysql://root@localhost", "names no database"),
        ("host='unterminated", "no closing quote"),
        ("db.example.com", "not a connection string"),
        ("host=db = x", "expected key=value"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(dsn: str, words: str) -> None:
    with pytest.raises(ValidatorError) as info:
        endpoint_from_dsn(dsn, environ={})
    assert words in str(info.value)
    assert "hunter2" not in str(info.value)


_passwords = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=30)


def libpq_quote(value: str) -> str:
    """How libpq's documentation says to write any value: single quotes, backslash escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(password=_passwords)
def test_any_password_survives_both_spellings_and_no_message_repeats_it(password: str) -> None:
    assert parts(f"postgresql://app:{quote(password, safe='')}@db/shop")[5] == password
    assert parts(f"host=db password={libpq_quote(password)} dbname=shop")[5] == password
    marked = "\u00a7" + password  # a character no message has, so "not in" means something
    with pytest.raises(ValidatorError) as info:
        endpoint_from_dsn(f"host=db password={libpq_quote(marked)} bogus=1", environ={})
    assert marked not in str(info.value)
