"""Publishing inside the caller's transaction (P1).

The rows and their NOTIFY go out in one statement on the caller's connection,
so they commit or roll back with the caller's business writes. Every argument
is checked before anything is sent: bad input writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Union

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from outbox.config import MAX_SECONDS, check_number
from outbox.errors import OutboxConfigError, OutboxError, PayloadError, PayloadTooLargeError
from outbox.sql import Statements

Connection = Union[AsyncConnection, AsyncSession, asyncpg.Connection]
Payload = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], list]

MAX_QUEUE_NAME = 128
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20
#: Far larger delays overflow PostgreSQL's interval/timestamp range, and that server-side error
#: would abort the caller's transaction instead of refusing the call up front.
MAX_DELAY_SECONDS = MAX_SECONDS


def check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue.strip():
        raise OutboxConfigError(f"queue must be a non-empty string, got {queue!r}")
    if not _is_text(queue):  # PostgreSQL text refuses NUL; the error would abort the caller's transaction
        raise OutboxConfigError(f"queue {queue!r} must be valid UTF-8 text without NUL characters")
    if len(queue) > MAX_QUEUE_NAME:
        raise OutboxConfigError(f"queue name of {len(queue)} characters is over the {MAX_QUEUE_NAME}-character limit")
    return queue


def encode_payload(payload: object, max_bytes: int) -> bytes:
    """bytes pass through, str is UTF-8, dict/list become standard JSON (no NaN, as for headers);
    anything else is refused."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
    elif isinstance(payload, str):
        try:
            data = payload.encode()
        except UnicodeEncodeError as exc:
            raise PayloadError(f"payload str is not encodable as UTF-8: {exc}") from exc
    elif isinstance(payload, (Mapping, list)):
        data = _json(payload, "payload is").encode()
    else:
        raise PayloadError(f"payload must be bytes, str, dict or list, got {type(payload).__name__}")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"payload of {len(data)} bytes is over max_payload_bytes={max_bytes}; "
            "store large bodies elsewhere and publish a reference, or raise max_payload_bytes"
        )
    return data


def encode_headers(headers: object) -> str:
    if headers is None:
        return "{}"
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
        raise PayloadError(f"headers must be a dict with string keys, got {type(headers).__name__}")
    # The server's ::jsonb cast would refuse NaN/Infinity (see _json), aborting the caller's
    # transaction; so would a NUL character (\u0000) in any string.
    text = _json(dict(headers), "headers are")
    if not _json_text_ok(headers):
        raise PayloadError("headers contain a NUL character or invalid UTF-8, which PostgreSQL jsonb cannot store")
    return text


def _json(value: object, subject: str) -> str:
    """Standard JSON, or a PayloadError before anything is sent: NaN and infinities have no JSON form,
    and PostgreSQL's jsonb and most consumers outside Python refuse them."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise PayloadError(f"{subject} not JSON-serialisable: {exc}") from exc
    except ValueError as exc:
        raise PayloadError(f"{subject} not JSON-serialisable: {exc} (NaN, infinities and circular references "
                           "have no JSON form)") from exc


def _is_text(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _json_text_ok(value: object) -> bool:
    """Every string (keys included) in a JSON-able value is text PostgreSQL can store."""
    if isinstance(value, str):
        return _is_text(value)
    if isinstance(value, Mapping):
        return all(_json_text_ok(k) and _json_text_ok(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_json_text_ok(v) for v in value)
    return True


async def insert(
    statements: Statements,
    conn: Connection,
    payloads: Sequence[object],
    *,
    queue: str,
    headers: object = None,
    delay_seconds: float = 0.0,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[int]:
    check_queue(queue)
    if isinstance(payloads, (str, bytes, bytearray, memoryview, Mapping)):
        raise PayloadError("publish_batch takes a sequence of payloads; use publish() for one")
    check_number("delay_seconds", delay_seconds, 0, MAX_DELAY_SECONDS)
    data = [encode_payload(p, max_payload_bytes) for p in payloads]
    if not data:
        return []
    head = encode_headers(headers)
    args = (queue, data, [head] * len(data), float(delay_seconds), statements.channel)
    if isinstance(conn, asyncpg.Connection):
        if not conn.is_in_transaction():
            raise OutboxError("publish needs the caller's open transaction: use `async with conn.transaction():`")
        rows = await conn.fetch(statements.insert, *args)
        return [r[0] for r in rows]
    if isinstance(conn, AsyncSession):
        conn = await conn.connection()
    if not isinstance(conn, AsyncConnection):
        raise OutboxConfigError(
            f"publish needs an SQLAlchemy AsyncConnection/AsyncSession or an asyncpg connection, got {type(conn).__name__}"
        )
    if conn.dialect.driver != "asyncpg":
        raise OutboxConfigError(f"the reference outbox needs the asyncpg driver (postgresql+asyncpg://), got {conn.dialect.driver}")
    result = await conn.exec_driver_sql(statements.insert, args)
    return [r[0] for r in result.fetchall()]
