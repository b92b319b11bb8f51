"""Connection samples: backends per ``application_name``, read from ``pg_stat_activity``.

The one sampler for chaos runs (L2: a consumer never holds more than its budget) and sizing runs
(connections against the server's limit). It connects directly, never through the proxy, and keeps
trying while the server restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from harness.history import HistoryWriter
from harness.names import SAMPLER_APP

SQL = "SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name LIKE $1 AND pid <> pg_backend_pid() GROUP BY 1"


async def sample_connections(dsn: str, history: HistoryWriter, *, like: str, every: float = 0.25,
                             sink: Callable[[dict[str, int]], None] | None = None) -> None:
    """Runs until cancelled: every ``every`` seconds one ``sample`` event in ``history`` (and to ``sink``)."""
    conn: asyncpg.Connection | None = None
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=2, server_settings={"application_name": SAMPLER_APP})
                rows = await conn.fetch(SQL, like, timeout=2)
                sample = {r[0]: int(r[1]) for r in rows}
                history.record("info", "sample", backends=sample)
                if sink is not None:
                    sink(sample)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None  # the server may be restarting; try again
            await asyncio.sleep(every)
    finally:
        if conn is not None:
            conn.terminate()
