"""A minimal adapter to copy: a naive table outbox written in place (see docs/adapters.md).

Run it: ``pytest scenarios/ --impl harness.adapters.example:adapter``. Replace the SQL with calls into
your own library; keep the contract: publish only inside ``tx``, set ``application_name`` on every
connection, stop claiming when ``ctx.stopping`` is set, and declare only the capabilities you honour.
"""

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg

from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx, read_payloads

TABLE = "example_outbox"


class ExampleAdapter:
    name = "example"
    capabilities = Capabilities(
        graceful_drain=True, connection_budget=True,
        notes=("naive table outbox: rows are locked (FOR UPDATE SKIP LOCKED) by an open transaction while "
               "handled and deleted after; no lease, no retry delay or cap, no DLQ (a failing row is retried "
               "on every poll), no LISTEN/NOTIFY, no metrics"),
    )
    dlq_table: str | None = None

    def connection_budget(self, config: ConsumerConfig) -> int:
        return config.max_workers  # one pooled connection per claiming task

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} ("
                               "id bigserial PRIMARY KEY, queue text NOT NULL, payload bytea NOT NULL)")
        finally:
            await conn.close()

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        # the harness's own transaction, already begun on the server: never commit or roll back here
        await tx.connection.executemany(f"INSERT INTO {TABLE} (queue, payload) VALUES ($1, $2)",
                                        [(queue, p) for p in payloads])

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        pool = await asyncpg.create_pool(ctx.dsn, min_size=1, max_size=cfg.pool_size or cfg.max_workers,
                                         server_settings={"application_name": ctx.application_name})
        tasks = [asyncio.create_task(self._claim_loop(pool, ctx)) for _ in range(cfg.max_workers)]
        try:
            await ctx.stopping.wait()
            _, late = await asyncio.wait(tasks, timeout=cfg.graceful_timeout)
            for task in late:
                task.cancel()  # its transaction rolls back: the rows are claimable again
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await pool.close()

    async def _claim_loop(self, pool: asyncpg.Pool, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        while not ctx.stopping.is_set():
            claimed = 0
            try:
                async with pool.acquire(timeout=cfg.statement_timeout_seconds) as conn, conn.transaction():
                    rows = await conn.fetch(f"SELECT id, payload FROM {TABLE} WHERE queue = $1 ORDER BY id "
                                            "LIMIT $2 FOR UPDATE SKIP LOCKED", cfg.queue, cfg.fetch_batch_size)
                    for row in rows:
                        if ctx.stopping.is_set():
                            break  # unstarted rows are released by the commit
                        try:
                            await ctx.handler(row["payload"], DeliveryInfo(key=str(row["id"])))
                        except Exception:  # noqa: BLE001 - a failing row stays and is retried
                            continue
                        await conn.execute(f"DELETE FROM {TABLE} WHERE id = $1", row["id"])
                        claimed += 1
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                ctx.log.warning("example outbox: %s", exc)
            if not claimed:  # idle (or only failing rows): poll again later, or stop
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ctx.stopping.wait(), cfg.max_fetch_interval)

    async def read_state(self, dsn: str) -> OutboxState:
        return await read_payloads(dsn, f"SELECT payload FROM {TABLE}")  # no dead-letter table


adapter = ExampleAdapter()
