"""Adapter for faststream-outbox (PyPI ``faststream-outbox``, FastStream broker on a Postgres table).

Everything goes through the library's public API: ``make_outbox_table`` / ``make_dlq_table`` for the
schema, ``OutboxBroker.publish_batch(..., session=<AsyncConnection>)`` inside the harness's
transaction, and an ``OutboxBroker`` subscriber as the consumer. What the harness sees of a delivery
comes from the claimed row (``acquired_at`` is set by the fetch CTE with ``now()``, so it is the
database clock) and from the broker's ``metrics_recorder`` seam.

Two pieces of glue, both on public surfaces:

- ``application_name``: the broker opens its LISTEN connection itself, from the engine URL only
  (``connect_args`` are not used for it), so the name also travels in the URL, as asyncpg's ``dsn``
  query argument, whose leftover query keys asyncpg turns into server settings.
- settle outcomes: the recorder's ``acked`` / ``nacked_retried`` / ``nacked_terminal`` / ``lease_lost``
  events are emitted after the row write landed (or was refused by the lease token), from the same
  worker task that ran the handler, and only those closing a handler call carry ``duration_seconds``.
  The adapter pairs them with the call the same task made last.
- logging: FastStream's default broker logger does not propagate, so the broker gets a plain logger;
  the library's warnings and errors then reach the worker's history (D8 counts warnings, L3 errors).

Not written here on purpose (this module is imported in worker processes through ``load_adapter``):
no ``from __future__ import annotations``, because FastStream resolves the handler's annotations.
"""

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from faststream_outbox import (
    ConstantRetry,
    ExponentialRetry,
    NoRetry,
    OutboxBroker,
    make_dlq_table,
    make_outbox_table,
)
from faststream_outbox.annotations import OutboxMessage
from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx, RetryConfig, read_payloads, recreate_tables
from harness.provision.postgres import asyncpg_url

TABLE = "harness_outbox"
DLQ_TABLE = "harness_outbox_dlq"

# faststream-outbox event name -> the harness's O1 counter name
_METRICS = {
    "fetched": "fetched",
    "acked": "acked",
    "nacked_retried": "nacked_retry",
    "nacked_terminal": "nacked_terminal",
    "dlq_written": "dlq_written",
    "lease_lost": "lease_lost",
    "drain_timeout": "drain_timeout",
}
# events that close a handler call (when they carry duration_seconds), and what they mean for the row
_CLOSING = {"acked": "acked", "nacked_retried": "retry", "nacked_terminal": None, "lease_lost": "lease_lost",
            "dispatch_abandoned": None}


def engine_url(dsn: str, application_name: str | None = None) -> Any:
    url = make_url(asyncpg_url(dsn))
    if application_name is not None:
        # read by asyncpg.connect(dsn=...): leftover query keys become server settings, so the broker's
        # own LISTEN connection (built from the URL alone) carries the name as well
        url = url.update_query_dict({"dsn": f"postgresql:///?application_name={application_name}"})
    return url


class FaststreamOutboxAdapter:
    name = "faststream-outbox"
    capabilities = Capabilities(
        dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=True, lease_times=True,
        settle_outcomes=True, notify=True, graceful_drain=True, metrics=True, connection_budget=True,
        notes=("faststream-outbox 0.19 through OutboxBroker: lease-only delivery (acquired_at by now()), "
               "token-checked writes, DLQ by DELETE...RETURNING CTE, LISTEN/NOTIFY with polling fallback. "
               "Settle outcomes are the metrics_recorder's acked/nacked_retried/nacked_terminal/lease_lost "
               "events paired with the worker task's last handler call; a row terminated by max_deliveries "
               "before its handler runs has no call and reports no settle. Retry jitter is the library's "
               "+/- jitter_factor/2. The LISTEN connection's health probe runs every 30 s: a silently killed "
               "LISTEN backend is noticed then, and until then idle pickup falls back to polling."),
    )
    dlq_table: str | None = DLQ_TABLE

    def __init__(self) -> None:
        self._metadata = MetaData()
        self.table = make_outbox_table(self._metadata, TABLE)
        self.dlq = make_dlq_table(self._metadata, DLQ_TABLE)
        # an engine-less broker can publish on a caller's session; the harness runs many event loops
        self._publisher = OutboxBroker(None, outbox_table=self.table, dlq_table=self.dlq, log_level=logging.DEBUG)

    def connection_budget(self, config: ConsumerConfig) -> int:
        # documented: max_workers + 1 pool connections per subscriber plus one raw LISTEN connection
        return config.max_workers + 2

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        await recreate_tables(dsn, self._metadata)

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        if payloads:
            await self._publisher.publish_batch(*payloads, queue=queue, session=tx.sa_connection)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        settings = {"application_name": ctx.application_name,
                    "statement_timeout": str(int(cfg.statement_timeout_seconds * 1000))}
        pool_size = cfg.pool_size if cfg.pool_size is not None else cfg.max_workers + 1
        engine = create_async_engine(
            engine_url(ctx.dsn, ctx.application_name), pool_size=max(1, pool_size), max_overflow=0,
            pool_timeout=cfg.statement_timeout_seconds,
            connect_args={"server_settings": settings, "timeout": cfg.statement_timeout_seconds},
        )
        calls: dict[asyncio.Task[Any], tuple[bytes, DeliveryInfo]] = {}

        def recorder(event: str, tags: Mapping[str, Any]) -> None:
            try:
                _record(ctx, calls, event, tags, dlq=cfg.dlq)
            except Exception:  # noqa: BLE001 - a recorder must never break the dispatch path
                ctx.log.debug("faststream-outbox recorder failed", exc_info=True)

        # FastStream's default broker logger does not propagate; a plain logger lets the library's warnings
        # and errors (LISTEN fallback, connection failures) reach the worker's history. Per-message
        # Received/Processed lines go out at DEBUG.
        broker = OutboxBroker(engine, outbox_table=self.table, dlq_table=self.dlq if cfg.dlq else None,
                              graceful_timeout=cfg.graceful_timeout, metrics_recorder=recorder,
                              logger=logging.getLogger("faststream_outbox.broker"), log_level=logging.DEBUG)

        @broker.subscriber(cfg.queue, max_workers=cfg.max_workers, retry_strategy=_retry(cfg.retry),
                           fetch_batch_size=cfg.fetch_batch_size, min_fetch_interval=cfg.min_fetch_interval,
                           max_fetch_interval=cfg.max_fetch_interval, lease_ttl_seconds=cfg.lease_ttl_seconds,
                           max_deliveries=cfg.max_deliveries)
        async def handle(msg: OutboxMessage) -> None:
            row = msg.raw_message
            info = DeliveryInfo(lease_at=row.acquired_at, delivery=row.deliveries_count, key=str(row.id))
            task = asyncio.current_task()
            if task is not None:
                calls[task] = (row.payload, info)
            await ctx.handler(row.payload, info)

        try:
            await broker.start()
            await ctx.stopping.wait()
            await broker.stop()
        finally:
            await engine.dispose()

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, f"SELECT payload FROM {TABLE}", f"SELECT payload FROM {DLQ_TABLE}")


def _record(ctx: ConsumerContext, calls: dict[asyncio.Task[Any], tuple[bytes, DeliveryInfo]], event: str,
            tags: Mapping[str, Any], *, dlq: bool) -> None:
    name = _METRICS.get(event)
    if name is not None:
        value = float(tags.get("count", 0)) if event == "fetched" else 1.0
        if value:
            ctx.metric(name, value, {"queue": str(tags.get("queue", ""))})
    if event not in _CLOSING or "duration_seconds" not in tags:
        return  # no handler ran for this event (e.g. nacked_terminal by max_deliveries before dispatch)
    task = asyncio.current_task()
    call = calls.pop(task, None) if task is not None else None
    if call is None:
        return
    outcome = _CLOSING[event]
    if event == "nacked_terminal":
        outcome = "dead_lettered" if dlq else "dropped"
    if outcome is not None:
        ctx.settled(call[0], outcome, call[1])



def _retry(retry: RetryConfig) -> ExponentialRetry | ConstantRetry | NoRetry:
    return retry.build(exponential=ExponentialRetry, constant=ConstantRetry, none=NoRetry)


adapter = FaststreamOutboxAdapter()
