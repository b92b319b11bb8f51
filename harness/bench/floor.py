"""The raw-SQL floor: the reference schema's own statements in plain asyncpg loops, no handler, no framework."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from harness.bench.config import QUEUE, BenchConfig, PhaseError
from harness.bench.db import vacuum
from harness.payload import numbered
from harness.provision.postgres import PostgresServer, asyncpg_url
from outbox import Outbox, make_outbox_table


async def floor(server: PostgresServer, config: BenchConfig, say: Callable[[str], None]) -> dict[str, Any]:
    """``messages`` rows in the reference schema, in a database of their own, drained by ``floor_loops``
    loops, each on its own connection, claiming a batch with the lease CTE (``Statements.fetch``) and
    deleting it in one token-guarded statement (``Statements.ack``)."""
    name = f"bench_floor_{uuid.uuid4().hex[:8]}"
    dsn = await server.create_database(name)
    try:
        metadata = MetaData()
        outbox = Outbox(make_outbox_table(metadata, "bench_floor"))
        engine = create_async_engine(asyncpg_url(dsn), pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            for start in range(0, config.messages, config.publish_chunk):
                seqs = range(start, min(config.messages, start + config.publish_chunk))
                async with engine.begin() as conn:
                    await outbox.publish_batch(conn, [numbered(s, config.payload_bytes) for s in seqs], queue=QUEUE)
        finally:
            await engine.dispose()
        await vacuum(dsn)
        st = outbox.statements
        batch, ttl = config.floor_batch_size, config.lease_ttl_seconds
        conns = [await asyncpg.connect(dsn) for _ in range(config.floor_loops)]
        deleted = 0

        async def loop(conn: asyncpg.Connection) -> None:
            nonlocal deleted
            while True:
                rows = await conn.fetch(st.fetch, QUEUE, ttl, batch)
                if not rows:
                    return
                gone = await conn.fetch(st.ack, [r[0] for r in rows], [r[3] for r in rows])
                deleted += len(gone)

        try:
            t0 = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), timeout=config.timeout_seconds)
            elapsed = time.perf_counter() - t0
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        if deleted != config.messages:
            raise PhaseError(f"floor deleted {deleted} rows, expected {config.messages}")
        say(f"raw-SQL floor: {config.messages} in {elapsed:.2f} s")
        return {"floor_msgs_per_s": round(config.messages / elapsed, 1), "floor_seconds": round(elapsed, 3)}
    finally:
        await server.drop_database(name)
