"""Endpoints from connection strings (``drill baseline capture --dsn ...``).

Accepted forms, and every part of them is honoured or refused, never ignored::

    postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]     (also postgres://)
    host=/run/postgresql port=5433 dbname=shop user=app sslmode=require         (libpq key=value)
    mysql://[user[:password]@][host][:port]/dbname[?unix_socket=/run/mysqld/mysqld.sock]   (also mariadb://)

PostgreSQL parameters (URL query or key=value): ``host`` (a name, an address or
a socket directory, also percent-encoded in the URL: ``%2Frun%2Fpostgresql``),
``port``, ``dbname``, ``user``, ``password``, ``sslmode``, ``sslrootcert``, as
libpq reads them; a query parameter wins over the URL's part, as in libpq.
MySQL/MariaDB parameters: ``unix_socket`` (or ``socket``), ``port``,
``ssl-mode`` (``DISABLED``, ``REQUIRED``, ``VERIFY_IDENTITY``) and ``ssl-ca``.
A parameter outside these lists is an error naming it: silently dropping
``?port=`` or ``sslmode=`` would connect somewhere else, or in clear text.

A password in the string works, but shells keep history: the environment
(``PGPASSWORD`` / ``MYSQL_PWD``) is read when the string has none. The
password is wrapped in :class:`Secret` at once, and no message repeats any
part of the string's values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

from validators.endpoint import Endpoint, Engine, Secret
from validators.errors import ValidatorError

__all__ = ["endpoint_from_dsn"]

_SCHEMES: dict[str, Engine] = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_DEFAULT_PORT: dict[Engine, int] = {"postgres": 5432, "mysql": 3306}
_PASSWORD_ENV: dict[Engine, str] = {"postgres": "PGPASSWORD", "mysql": "MYSQL_PWD"}

_PG_PARAMS = ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert")
_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_MY_PARAMS = ("unix_socket", "socket", "port", "ssl-mode", "ssl-ca")
_MY_SSLMODES = ("DISABLED", "REQUIRED", "VERIFY_IDENTITY")

_FORMS = "postgresql://user@host:5432/db, host=/run/postgresql port=5432 dbname=db, or mysql://user@host/db"


def _bad(problem: str) -> ValidatorError:
    return ValidatorError(f"--dsn: {problem}", hint=f"use {_FORMS}")


# ---------------------------------------------------------------- libpq key=value

_KV_TOKEN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*")


def _kv_value(text: str, pos: int) -> tuple[str, int]:
    """A libpq value at ``pos``: single-quoted (``\\'`` and ``\\\\`` escapes) or up to whitespace."""
    out: list[str] = []
    if pos < len(text) and text[pos] == "'":
        pos += 1
        while pos < len(text) and text[pos] != "'":
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        if pos >= len(text):
            raise _bad("a quoted value has no closing quote")
        return "".join(out), pos + 1
    while pos < len(text) and not text[pos].isspace():
        if text[pos] == "\\" and pos + 1 < len(text):
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos


def _parse_kv(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 0
    while text[pos:].strip():
        m = _KV_TOKEN.match(text, pos)
        if not m:
            raise _bad(f"expected key=value at character {pos + 1}")
        value, pos = _kv_value(text, m.end())
        params[m.group(1)] = value
    return params


# ---------------------------------------------------------------- URLs


def _split_hostport(hostport: str) -> tuple[str, str]:
    """``host:port``, ``[::1]:port``, ``%2Fsocket%2Fdir`` → (host, port), both still percent-encoded."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad("an IPv6 address opened with [ is not closed")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _bad("unexpected text after the IPv6 address")
        return host, rest[1:]
    host, _, port = hostport.partition(":")
    return host, port


def _parse_url(dsn: str) -> tuple[Engine, dict[str, str]]:
    scheme, _, rest = dsn.partition("://")
    engine = _SCHEMES.get(scheme.lower())
    if engine is None:
        raise _bad(f"unsupported URL scheme {scheme.lower()!r}")
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise _bad("a URL fragment (#...) has no meaning here")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    params: dict[str, str] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    if "," in hostport:
        raise _bad("several hosts: a baseline is captured from one server")
    host, port = _split_hostport(hostport)
    if host:
        params["host"] = unquote(host)
    if port:
        params["port"] = port
    if slash and path:
        params["dbname"] = unquote(path)
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        params[key] = value  # as in libpq, a query parameter wins over the URL's own part
    return engine, params


# ---------------------------------------------------------------- endpoint


def _port(value: str | None, engine: Engine) -> int:
    if value is None or value == "":
        return _DEFAULT_PORT[engine]
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise _bad("the port must be a number from 1 to 65535")
    return int(value)


def _check_known(params: Mapping[str, str], known: tuple[str, ...], engine: Engine) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ValidatorError(
            f"--dsn: unsupported {engine} parameter{'s' if len(unknown) > 1 else ''} {shown}",
            hint="supported: " + ", ".join(known),
        )


def _pg_options(params: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    mode = params.get("sslmode")
    if mode is not None:
        if mode not in _PG_SSLMODES:
            raise _bad("sslmode must be one of " + ", ".join(_PG_SSLMODES))
        options["sslmode"] = mode
    if params.get("sslrootcert"):
        options["sslrootcert"] = params["sslrootcert"]
    if mode in ("verify-ca", "verify-full") and "sslrootcert" not in options:
        raise _bad(f"sslmode={mode} needs sslrootcert=CA-FILE (the CA that signed the server's certificate)")
    return options


def _mysql_options(params: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    mode = params.get("ssl-mode")
    if mode is not None and mode.upper() not in _MY_SSLMODES:
        raise _bad("ssl-mode must be one of " + ", ".join(_MY_SSLMODES))
    mode = mode.upper() if mode else None
    if mode == "VERIFY_IDENTITY" or (params.get("ssl-ca") and mode != "DISABLED"):
        if not params.get("ssl-ca"):
            raise _bad("ssl-mode=VERIFY_IDENTITY needs ssl-ca=CA-FILE")
        options["tls_ca"] = params["ssl-ca"]
    elif mode == "REQUIRED":
        options["tls"] = "required"
    return options


def endpoint_from_dsn(dsn: str, *, environ: Mapping[str, str] | None = None) -> Endpoint:
    """Parse ``dsn`` into an :class:`Endpoint`; ValidatorError (without any value) when malformed."""
    env = os.environ if environ is None else environ
    text = dsn.strip()
    if "://" in text:
        engine, params = _parse_url(text)
    elif _KV_TOKEN.match(text):
        engine, params = "postgres", _parse_kv(text)
    else:
        raise _bad("not a connection string")
    password = params.pop("password", None) or env.get(_PASSWORD_ENV[engine])
    if engine == "postgres":
        _check_known(params, _PG_PARAMS, engine)
        host = params.get("host") or "/var/run/postgresql"
        if "," in host or "," in params.get("port", ""):
            raise _bad("several hosts: a baseline is captured from one server")
        return Endpoint(
            engine=engine,
            host=host,
            port=_port(params.get("port"), engine),
            database=params.get("dbname") or "postgres",
            user=params.get("user") or "postgres",
            password=Secret(password) if password else None,
            options=_pg_options(params),
        )
    _check_known({k: v for k, v in params.items() if k not in ("host", "user", "dbname")}, _MY_PARAMS, engine)
    if not params.get("dbname"):
        raise _bad("the URL names no database (mysql://user@host/dbname)")
    socket = params.get("unix_socket") or params.get("socket")
    return Endpoint(
        engine=engine,
        host=params.get("host") or "localhost",
        port=_port(params.get("port"), engine),
        database=params["dbname"],
        user=params.get("user") or "root",
        password=Secret(password) if password else None,
        unix_socket=socket or None,
        options=_mysql_options(params),
    )
