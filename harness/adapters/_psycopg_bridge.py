"""Running a psycopg-only library's own statements on the harness's asyncpg transaction.

procrastinate and chancy both document a "defer inside my transaction" API, but it takes a psycopg
connection or cursor, and the harness's transaction lives on an asyncpg connection: a second
connection could not join it. These helpers translate at the driver level only: the SQL text and
the arguments are what the library built; placeholders (``%(name)s``, ``%s``) become asyncpg's
``$n``, JSON values become text (asyncpg's json/jsonb codecs take text). What the library would
have written is written, in the caller's transaction, and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s|%s")


def with_app_name(dsn: str, application_name: str) -> str:
    """libpq (psycopg) reads ``application_name`` from the URI query, so every connection made from
    the DSN, LISTEN ones included, carries it."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = application_name
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def to_asyncpg(query: str, params: Mapping[str, Any] | Sequence[Any] | None) -> tuple[str, list[Any]]:
    """psycopg's pyformat (named or positional) to asyncpg's numbered placeholders, with the values."""
    args: list[Any] = []
    names: dict[str, int] = {}
    positional = iter(params if isinstance(params, Sequence) and not isinstance(params, str) else ())

    def swap(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token == "%%":
            return "%"
        if name is not None:
            assert isinstance(params, Mapping), "named placeholders need a mapping"
            if name not in names:
                args.append(_value(params[name]))
                names[name] = len(args)
            return f"${names[name]}"
        args.append(_value(next(positional)))
        return f"${len(args)}"

    return _PLACEHOLDER.sub(swap, query), args


def _value(value: Any) -> Any:
    """psycopg-adapted values as asyncpg takes them: dicts and psycopg Json wrappers as JSON text,
    tuples (composite rows) and lists element by element."""
    wrapped = getattr(value, "obj", None)
    if wrapped is not None and type(value).__module__.startswith("psycopg"):
        return json.dumps(wrapped)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple):
        return tuple(_value(v) for v in value)
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


async def fetch_dicts(conn: asyncpg.Connection, query: str,
                      params: Mapping[str, Any] | Sequence[Any] | None = None) -> list[dict[str, Any]]:
    text, args = to_asyncpg(query, params)
    return [dict(r) for r in await conn.fetch(text, *args)]


class AsyncpgCursor:
    """The part of psycopg's ``AsyncCursor`` (with ``dict_row``) that a library's ``*_ex(cursor, ...)``
    helpers use to write: ``execute``, ``fetchone``, ``fetchall``. ``psycopg.sql``
    compositions are rendered with ``as_string`` (identifiers quoted as psycopg would)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._rows: list[dict[str, Any]] = []

    async def execute(self, query: Any, params: Mapping[str, Any] | Sequence[Any] | None = None) -> None:
        text = query if isinstance(query, str) else query.as_string(None)
        self._rows = await fetch_dicts(self.conn, text, params)

    async def fetchone(self) -> dict[str, Any] | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[dict[str, Any]]:
        rows, self._rows = self._rows, []
        return rows
