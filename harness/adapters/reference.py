"""Adapter for the reference outbox: the same contract any third-party implementation uses."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx, read_payloads, recreate_tables
from harness.provision.postgres import asyncpg_url
from outbox import ConstantRetry, ExponentialRetry, Message, NoRetry, Outbox, make_dlq_table, make_outbox_table

TABLE = "harness_outbox"
DLQ_TABLE = "harness_outbox_dlq"


class ReferenceAdapter:
    name = "reference"
    capabilities = Capabilities(
        dlq=True, max_deliveries=True, retry_schedule=True, lease_ttl=True, lease_times=True,
        settle_outcomes=True, notify=True, graceful_drain=True, metrics=True, connection_budget=True,
    )
    dlq_table: str | None = DLQ_TABLE

    def __init__(self, outbox_factory: type[Outbox] = Outbox) -> None:
        self._metadata = MetaData()
        self._tables = (make_outbox_table(self._metadata, TABLE), make_dlq_table(self._metadata, DLQ_TABLE))
        self.outbox = outbox_factory(self._tables[0], dlq_table=self._tables[1])

    def connection_budget(self, config: ConsumerConfig) -> int:
        return config.max_workers + 2  # max_workers + 1 pool connections and one LISTEN connection

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        await recreate_tables(dsn, self._metadata)

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        await self.outbox.publish_batch(tx.sa_connection, list(payloads), queue=queue)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        settings = {"application_name": ctx.application_name}
        connect_args = {"server_settings": settings, "timeout": cfg.statement_timeout_seconds}
        pool_size = cfg.pool_size if cfg.pool_size is not None else cfg.max_workers + 1
        engine = create_async_engine(asyncpg_url(ctx.dsn), pool_size=pool_size, max_overflow=0,
                                     pool_timeout=cfg.statement_timeout_seconds, connect_args=connect_args)

        def info(msg: Message) -> DeliveryInfo:  # lease_at, delivery, key
            return DeliveryInfo(msg.acquired_at, msg.deliveries, str(msg.id))

        async def handle(msg: Message) -> None:
            await ctx.handler(msg.payload, info(msg))

        sub = self.outbox.subscriber(
            engine, queue=cfg.queue, handler=handle, max_workers=cfg.max_workers,
            fetch_batch_size=cfg.fetch_batch_size, lease_ttl_seconds=cfg.lease_ttl_seconds,
            max_deliveries=cfg.max_deliveries, graceful_timeout=cfg.graceful_timeout,
            retry=cfg.retry.build(exponential=ExponentialRetry, constant=ConstantRetry, none=NoRetry),
            min_fetch_interval=cfg.min_fetch_interval, max_fetch_interval=cfg.max_fetch_interval,
            statement_timeout=cfg.statement_timeout_seconds, listen_connect_args={"server_settings": settings},
            metrics_recorder=ctx.metric,
            on_settled=(lambda m, outcome: ctx.settled(m.payload, outcome, info(m))) if ctx.records_settles else None,
        )
        try:
            await sub.start()
            await ctx.stopping.wait()
            await sub.stop()
        finally:
            await engine.dispose()

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, f"SELECT payload FROM {TABLE}", f"SELECT payload FROM {DLQ_TABLE}")



adapter = ReferenceAdapter()
