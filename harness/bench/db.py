"""Database steps of the benchmark: publishing through an adapter, VACUUM, waiting for an empty outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from harness.adapter import Adapter, OutboxState, PublishTx
from harness.bench.config import QUEUE
from harness.provision.postgres import asyncpg_url


async def vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("VACUUM (ANALYZE)")
    finally:
        await conn.close()


async def publish(adapter: Adapter, dsn: str, payloads: Sequence[bytes], chunk: int) -> float:
    """Publishes ``payloads`` through the adapter in transactions of ``chunk`` (a :class:`PublishTx`, as
    the runner publishes); returns the monotonic time just before the last COMMIT."""
    engine = create_async_engine(asyncpg_url(dsn), pool_size=1, max_overflow=0)
    t0 = 0.0
    try:
        for start in range(0, len(payloads), chunk):
            async with engine.connect() as conn:
                tx, ptx = await PublishTx.begin(conn)
                await adapter.publish(ptx, payloads[start:start + chunk], QUEUE)
                t0 = time.monotonic()
                await tx.commit()
    finally:
        await engine.dispose()
    return t0


async def until_empty(adapter: Adapter, dsn: str, timeout: float) -> tuple[float | None, OutboxState]:
    """Polls ``read_state`` until nothing is pending: (monotonic time it was seen empty, state);
    (None, last state) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        state = await adapter.read_state(dsn)
        now = time.monotonic()
        if not state.pending:
            return now, state
        if now > deadline:
            return None, state
        await asyncio.sleep(0.005)
