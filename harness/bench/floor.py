"""The raw-SQL floor: the reference schema's own statements in plain asyncpg loops, no handler, no framework."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from harness.bench.config import QUEUE, BenchConfig, PhaseError
from harness.bench.db import vacuum
from harness.payload import numbered
from harness.provision.postgres import asyncpg_url
from outbox import Outbox, make_outbox_table
from outbox.sql import Statements

TABLE = "bench_floor"


async def publish_floor(dsn: str, config: BenchConfig) -> None:
    """``messages`` rows in the reference schema, VACUUM ANALYZEd: the floor's backlog, copied for every drain."""
    metadata = MetaData()
    outbox = Outbox(make_outbox_table(metadata, TABLE))
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


async def drain_floor(dsn: str, config: BenchConfig) -> float:
    """Seconds ``floor_loops`` loops, each on its own connection, take to empty the backlog: each claims a
    batch with the lease CTE (``Statements.fetch``) and deletes it in one token-guarded ``Statements.ack``.
    Connecting is timed too, as an implementation's drain includes its start-up."""
    st = Statements(TABLE)
    batch, ttl = config.floor_batch_size, config.lease_ttl_seconds
    t0 = time.perf_counter()
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(config.floor_loops)))
    deleted = 0

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal deleted
        while True:
            rows = await conn.fetch(st.fetch, QUEUE, ttl, batch)
            if not rows:
                return
            gone = await conn.fetch(st.ack, [r["id"] for r in rows], [r["acquired_token"] for r in rows])
            deleted += len(gone)

    try:
        await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), timeout=config.timeout_seconds)
        elapsed = time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    if deleted != config.messages:
        raise PhaseError(f"floor deleted {deleted} rows, expected {config.messages}")
    return elapsed
