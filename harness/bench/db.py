"""Database steps of the benchmark: publishing through an adapter, VACUUM, copies of a published backlog,
waiting for an empty outbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from harness.adapter import Adapter, OutboxState, PublishTx
from harness.bench.config import QUEUE
from harness.provision.postgres import PostgresServer, asyncpg_url


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


async def clone(server: PostgresServer, template: str, name: str, timeout: float = 60.0) -> str:
    """A new database ``name`` copied from ``template`` (schema, rows, statistics, as VACUUM ANALYZE left them);
    returns its DSN. The backlog is published once, and every round drains an identical copy of it.
    ``FILE_COPY`` checkpoints first, so no round inherits the dirty buffers of the one before it (the
    default ``WAL_LOG`` strategy leaves the whole copy to be written back while the next drain runs)."""
    conn = await asyncpg.connect(server.dsn, timeout=10)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
                return server.database_dsn(name)
            except asyncpg.ObjectInUseError:  # a session on the template is still closing
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
