"""A compact transactional outbox on PostgreSQL: lease-only delivery, token-guarded acks.

    outbox = Outbox(make_outbox_table(metadata), dlq_table=make_dlq_table(metadata))
    async with engine.begin() as conn:            # the caller's transaction
        await conn.execute(orders.insert(), ...)  # business write
        await outbox.publish(conn, {"order": 1}, queue="orders")
    sub = outbox.subscriber(engine, queue="orders", handler=handle)
    await sub.start(); ...; await sub.stop()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox.config import MAX_COUNT, check_number
from outbox.errors import (
    OutboxConfigError,
    OutboxError,
    PayloadError,
    PayloadTooLargeError,
    SchemaValidationError,
)
from outbox.message import Message
from outbox.metrics import NAMES as METRIC_NAMES
from outbox.metrics import MetricsRecorder
from outbox.publish import DEFAULT_MAX_PAYLOAD_BYTES, Connection, insert
from outbox.retry import ConstantRetry, ExponentialRetry, NoRetry, RetryStrategy
from outbox.schema import make_dlq_table, make_outbox_table, names_for
from outbox.sql import Statements
from outbox.subscriber import Subscriber
from outbox.validate import SchemaIssue, find_issues

__all__ = [
    "METRIC_NAMES", "ConstantRetry", "ExponentialRetry", "Message", "MetricsRecorder", "NoRetry", "Outbox",
    "OutboxConfigError", "OutboxError", "PayloadError", "PayloadTooLargeError", "RetryStrategy", "SchemaIssue",
    "SchemaValidationError", "Subscriber", "make_dlq_table", "make_outbox_table", "names_for",
]


class Outbox:
    """One outbox table (and optional dead-letter table): publishing, subscribers, validation."""

    def __init__(self, table: Table | str, dlq_table: Table | str | None = None, *,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.statements = Statements(_name(table), _name(dlq_table) if dlq_table is not None else None)
        check_number("max_payload_bytes", max_payload_bytes, 1, MAX_COUNT, integer=True)
        self.max_payload_bytes = max_payload_bytes

    @property
    def channel(self) -> str:
        return self.statements.channel

    async def publish(self, conn: Connection, payload: Any, *, queue: str, headers: dict[str, Any] | None = None,
                      delay_seconds: float = 0.0) -> int:
        """Adds one message inside ``conn``'s transaction; returns its row id."""
        (row_id,) = await insert(self.statements, conn, [payload], queue=queue, headers=headers,
                                 delay_seconds=delay_seconds, max_payload_bytes=self.max_payload_bytes)
        return row_id

    async def publish_batch(self, conn: Connection, payloads: Sequence[Any], *, queue: str,
                            headers: dict[str, Any] | None = None, delay_seconds: float = 0.0) -> list[int]:
        """Adds many messages in one statement inside ``conn``'s transaction; all or none."""
        return await insert(self.statements, conn, payloads, queue=queue, headers=headers,
                            delay_seconds=delay_seconds, max_payload_bytes=self.max_payload_bytes)

    def subscriber(self, engine: AsyncEngine, *, queue: str, handler: Any, **options: Any) -> Subscriber:
        """A subscriber on ``queue``; see :class:`Subscriber` for the options and their defaults."""
        return Subscriber(engine, self.statements, queue=queue, handler=handler, **options)

    async def schema_issues(self, bind: AsyncEngine | AsyncConnection | asyncpg.Connection) -> list[SchemaIssue]:
        if isinstance(bind, asyncpg.Connection):
            return await find_issues(bind, self.statements.table, self.statements.dlq_table)
        if isinstance(bind, AsyncEngine):
            async with bind.connect() as conn:
                return await self.schema_issues(conn)
        raw = await bind.get_raw_connection()
        return await find_issues(raw.driver_connection, self.statements.table, self.statements.dlq_table)

    async def validate_schema(self, bind: AsyncEngine | AsyncConnection | asyncpg.Connection) -> None:
        """Raises :class:`SchemaValidationError` listing every drift (L5); for health checks, never at start."""
        issues = await self.schema_issues(bind)
        if issues:
            raise SchemaValidationError(issues)


def _name(table: Table | str) -> str:
    return table.name if isinstance(table, Table) else table
