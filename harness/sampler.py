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

SQL = ("SELECT application_name, pid, backend_start, query ~* '^\\s*LISTEN\\M' FROM pg_stat_activity"
       " WHERE application_name LIKE $1 AND pid <> pg_backend_pid()")


class ListenerWatch:
    """Backends seen issuing LISTEN, by pid and start time (one backend, not a later one that reuses its pid).

    ``pg_stat_activity`` shows only a backend's latest statement, and a listener that pings its connection (River's
    ``-- ping``) no longer shows its LISTEN a few seconds later; no view lists other sessions' channels. The sampler
    watches from before the workers connect, so a fault that must cut LISTEN finds those backends by what they were
    seen doing."""

    def __init__(self) -> None:
        self.seen: dict[int, object] = {}  # pid -> backend_start

    def note(self, pid: int, started: object) -> None:
        self.seen[pid] = started

    def backends(self) -> tuple[list[int], list[object]]:
        """(pids, backend starts) seen listening, as two parallel lists for SQL's unnest."""
        seen = dict(self.seen)  # a copy: the sampler may add to it meanwhile
        return list(seen), list(seen.values())


async def sample_connections(dsn: str, history: HistoryWriter, *, like: str, every: float = 0.25,
                             sink: Callable[[dict[str, int]], None] | None = None,
                             listeners: ListenerWatch | None = None) -> None:
    """Runs until cancelled: every ``every`` seconds one ``sample`` event in ``history`` (and to ``sink``); the
    backends seen issuing LISTEN go to ``listeners``."""
    conn: asyncpg.Connection | None = None
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(dsn, timeout=2, server_settings={"application_name": SAMPLER_APP})
                rows = await conn.fetch(SQL, like, timeout=2)
                sample: dict[str, int] = {}
                for app, pid, started, listening in rows:
                    sample[app] = sample.get(app, 0) + 1
                    if listening and listeners is not None:
                        listeners.note(pid, started)
                history.record("info", "sample", backends=sample)
                if sink is not None:
                    sink(sample)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None  # the server may be restarting; try again
            await asyncio.sleep(every)
    finally:
        if conn is not None:
            conn.terminate()
