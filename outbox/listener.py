"""LISTEN on a raw asyncpg connection, with fallback to polling (D7, D8).

The listener only wakes the fetch loop; polling every ``max_fetch_interval``
goes on regardless, so a lost listener costs latency, never messages. A failure
to connect or to LISTEN logs one WARNING per outage; the listener retries every
``retry_interval`` and logs once more (INFO) when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger("outbox.listener")


class Listener:
    def __init__(
        self,
        *,
        connect_kwargs: dict[str, Any],
        channel: str,
        listen_sql: str,
        queue: str,
        wake: Callable[[], None],
        retry_interval: float,
    ) -> None:
        self._connect_kwargs = connect_kwargs
        self._channel = channel
        self._listen_sql = listen_sql
        self._queue = queue
        self._wake = wake
        self._retry_interval = retry_interval
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self.connected = False
        self.warnings = 0
        self.notifications = 0  # NOTIFYs for this queue that woke the fetch loop: none while messages flow = polling

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._queue:
            self.notifications += 1
            self._wake()

    def _on_lost(self, _conn: object) -> None:
        self._lost.set()

    async def run(self) -> None:
        """Keeps one LISTEN connection open until cancelled."""
        warned = False
        try:
            while True:
                try:
                    self._lost.clear()
                    self._conn = await asyncpg.connect(**self._connect_kwargs)
                    self._conn.add_termination_listener(self._on_lost)
                    await self._conn.add_listener(self._channel, self._on_notify)
                    self.connected = True
                    if warned:
                        log.info("LISTEN on %s restored; NOTIFY wake-ups are back", self._channel)
                        warned = False
                    self._wake()  # catch up on anything committed while we were away
                    await self._wait_lost()
                except Exception as exc:  # noqa: BLE001 - polling covers for any failure; keep retrying
                    if not warned:
                        self.warnings += 1
                        log.warning(
                            "LISTEN on %s unavailable (%s: %s); falling back to polling every max_fetch_interval",
                            self._channel, type(exc).__name__, exc,
                        )
                        warned = True
                self.connected = False
                await self._close()
                if not warned:
                    self.warnings += 1
                    log.warning("LISTEN connection on %s lost; falling back to polling", self._channel)
                    warned = True
                await asyncio.sleep(self._retry_interval)
        finally:
            self.connected = False
            await self._close()

    async def _wait_lost(self) -> None:
        """Returns when the connection dies; a periodic ping catches a silently dead peer."""
        assert self._conn is not None
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=self._retry_interval)
                return
            except asyncio.TimeoutError:
                # Re-LISTEN is an idempotent round trip, and keeps this backend recognisable as the
                # LISTEN connection in pg_stat_activity.
                await self._conn.execute(self._listen_sql, timeout=self._retry_interval)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
