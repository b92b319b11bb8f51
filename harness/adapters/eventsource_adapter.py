"""Adapter for eventsource-py (PyPI ``eventsource-py``): its PostgreSQL outbox repository.

eventsource-py ships the ``event_outbox`` table (``eventsource.migrations.get_schema("outbox")``), a
repository (``PostgreSQLOutboxRepository``: ``add_event``, ``get_pending_events``, ``mark_published``,
``increment_retry``, ``mark_failed``) and SQL helper functions, but no publishing worker: its
repository-operations guide leaves the drain loop to the application. So **the consumer loop below is
this adapter's code, not the library's**, and every verdict about delivery is about that loop on top of
the library's table and repository.

The loop follows the guide's recipe for more than one worker: ``get_pending_events`` takes no row
locks (two drain loops would claim the same rows), so rows are claimed with the shipped
``get_pending_outbox_events(batch_size, max_retries)`` function (``FOR UPDATE SKIP LOCKED``) inside a
transaction that stays open while their handlers run; each row is then marked through a repository
bound to that same connection (``mark_published``, or ``increment_retry`` / ``mark_failed`` once
``retry_count + 1`` reaches the attempt budget) and the batch commits. Publishing is
``PostgreSQLOutboxRepository(<the harness's AsyncConnection>).add_event(...)``: a connection-backed
repository executes on the caller's transaction and commits nothing.
"""

import asyncio
import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventsource import DomainEvent, PostgreSQLOutboxRepository, register_event
from eventsource.migrations import get_schema
from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx, read_payloads
from harness.provision.postgres import asyncpg_url

TABLE = "event_outbox"
_AGGREGATES = uuid.UUID("6f1c3b0e-2f4a-4d8e-9a57-0c1d2e3f4a5b")  # namespace for per-queue aggregate ids
_CLAIM = text("SELECT id, event_type, event_data, retry_count FROM get_pending_outbox_events(:batch, :max_retries)")


@register_event
class HarnessMessage(DomainEvent):
    """One harness payload as an eventsource domain event (``outbox_event_data`` stores it as JSON)."""

    aggregate_type: str = "HarnessQueue"
    queue: str
    body_b64: str


def _payload(event_data: Any) -> bytes:
    data = json.loads(event_data) if isinstance(event_data, str) else event_data
    return base64.b64decode(HarnessMessage.model_validate(data["payload"]).body_b64)


class EventsourceAdapter:
    name = "eventsource-py"
    capabilities = Capabilities(
        dlq=True, max_deliveries=False, retry_schedule=False, lease_ttl=False, lease_times=False,
        settle_outcomes=False, notify=False, graceful_drain=True, metrics=False, connection_budget=True,
        notes=("Consumer loop written by the adapter: eventsource-py 0.8.1 ships an outbox table and repository "
               "but no publishing worker. The loop follows its documented multi-worker recipe: claim with the "
               "shipped get_pending_outbox_events() SQL function (FOR UPDATE SKIP LOCKED) in a transaction held "
               "while handlers run, mark through PostgreSQLOutboxRepository on that connection, commit per batch. "
               "Hence: no lease TTL (row locks; a crashed worker's rows are free once PostgreSQL ends its backend), "
               "no retry delay (increment_retry leaves the row eligible at once), retry_count counts failures only "
               "(no delivery cap), dead letters are rows with status 'failed' in event_outbox (no DLQ table), no "
               "LISTEN/NOTIFY (idle polling every max_fetch_interval), no queues (ConsumerConfig.queue unused), no "
               "metrics. The repository's own get_pending_events takes no locks: two loops built on it "
               "double-deliver (documented). Settles reported after each batch commits are the loop's own."),
    )
    dlq_table: str | None = None  # dead rows stay in event_outbox with status 'failed'

    def connection_budget(self, config: ConsumerConfig) -> int:
        # documented sizing: pool_size + max_overflow per process; the loop's engine uses max_workers + 0
        return config.max_workers

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:  # the shipped DDL is idempotent (IF NOT EXISTS / OR REPLACE); drop first for a clean table
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
            await conn.execute(get_schema("outbox"))
        finally:
            await conn.close()

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        repo = PostgreSQLOutboxRepository(tx.sa_connection, enable_tracing=False)
        aggregate = uuid.uuid5(_AGGREGATES, queue)
        for payload in payloads:
            await repo.add_event(HarnessMessage(aggregate_id=aggregate, queue=queue,
                                                body_b64=base64.b64encode(payload).decode()))

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        pool_size = cfg.pool_size if cfg.pool_size is not None else cfg.max_workers
        engine = create_async_engine(
            asyncpg_url(ctx.dsn), pool_size=max(1, pool_size), max_overflow=0,
            pool_timeout=cfg.statement_timeout_seconds,
            connect_args={"server_settings": {"application_name": ctx.application_name},
                          "timeout": cfg.statement_timeout_seconds},
        )
        workers = [asyncio.create_task(self._worker(engine, ctx)) for _ in range(cfg.max_workers)]
        try:
            await ctx.stopping.wait()
            _, late = await asyncio.wait(workers, timeout=cfg.graceful_timeout)
            for task in late:  # cut off: the open claim transaction rolls back and the rows are free again
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await engine.dispose()

    async def _worker(self, engine: AsyncEngine, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        batch = max(1, cfg.fetch_batch_size // max(1, cfg.max_workers))
        while not ctx.stopping.is_set():
            try:
                claimed = await self._drain_once(engine, ctx, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive database faults
                ctx.log.warning("eventsource-py drain pass failed: %s: %s", type(exc).__name__, exc)
                claimed = 0
            if not claimed:
                try:
                    await asyncio.wait_for(ctx.stopping.wait(), timeout=cfg.max_fetch_interval)
                except TimeoutError:
                    pass

    async def _drain_once(self, engine: AsyncEngine, ctx: ConsumerContext, batch: int) -> int:
        budget = ctx.config.retry.calls
        settled: list[tuple[bytes, str, DeliveryInfo]] = []
        async with engine.connect() as conn:
            async with conn.begin():
                rows = (await conn.execute(_CLAIM, {"batch": batch, "max_retries": budget})).all()
                repo = PostgreSQLOutboxRepository(conn, enable_tracing=False)
                for row in rows:
                    if ctx.stopping.is_set():
                        break  # not started: left unmarked, released by the commit below
                    payload = _payload(row.event_data)
                    info = DeliveryInfo(key=str(row.id))
                    try:
                        await ctx.handler(payload, info)
                    except Exception as exc:  # noqa: BLE001 - the handler's failure is the data
                        error = f"{type(exc).__name__}: {exc}"[:500]
                        if row.retry_count + 1 >= budget:
                            await repo.mark_failed(row.id, error)
                            settled.append((payload, "dead_lettered", info))
                        else:
                            await repo.increment_retry(row.id, error)
                            settled.append((payload, "retry", info))
                    else:
                        await repo.mark_published(row.id)
                        settled.append((payload, "acked", info))
        for payload, outcome, info in settled:  # the batch's marks are committed now
            ctx.settled(payload, outcome, info)
        return len(rows)

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, f"SELECT event_data FROM {TABLE} WHERE status = 'pending'",
                                   f"SELECT event_data FROM {TABLE} WHERE status = 'failed'", decode=_payload)


adapter = EventsourceAdapter()
