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

from outbox.errors import OutboxConfigError, OutboxError, PayloadError, PayloadTooLargeError
from outbox.sql import Statements

Connection = Union[AsyncConnection, AsyncSession, asyncpg.Connection]
Payload = Union[bytes, bytearray, memoryview, str, Mapping[str, Any], list]

MAX_QUEUE_NAME = 128
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 20


def check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not queue.strip():
        raise OutboxConfigError(f"queue must be a non-empty string, got {queue!r}")
    if len(queue) > MAX_QUEUE_NAME:
        raise OutboxConfigError(f"queue name of {len(queue)} characters is over the {MAX_QUEUE_NAME}-character limit")
    return queue


def encode_payload(payload: object, max_bytes: int) -> bytes:
    """bytes pass through, str is UTF-8, dict/list become JSON; anything else is refused."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        data = bytes(payload)
    elif isinstance(payload, str):
        data = payload.encode()
    elif isinstance(payload, (Mapping, list)):
        try:
            data = json.dumps(payload, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"payload is not JSON-serialisable: {exc}") from exc
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
    try:
        return json.dumps(dict(headers), separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"headers are not JSON-serialisable: {exc}") from exc


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
    if not isinstance(delay_seconds, (int, float)) or delay_seconds < 0:
        raise OutboxConfigError(f"delay_seconds must be a number >= 0, got {delay_seconds!r}")
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
