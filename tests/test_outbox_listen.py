"""LISTEN/NOTIFY: D7 (an idle subscriber wakes in well under a second, not a poll interval) and
D8 (without LISTEN it polls within max_fetch_interval, with one WARNING; a lost LISTEN backend
is replaced)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid



def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deliveries:
    def __init__(self) -> None:
        self.at: dict[bytes, float] = {}

    async def handler(self, msg) -> None:
        self.at[bytes(msg.payload)] = time.monotonic()


async def _latency(tables, deliveries: Deliveries, wait_until, payload: bytes, timeout: float) -> float:
    t0 = time.monotonic()
    await tables.publish(payload)
    await wait_until(lambda: payload in deliveries.at, timeout=timeout, interval=0.002, message=f"{payload!r}")
    return deliveries.at[payload] - t0


def _outbox_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("outbox") and r.levelno == logging.WARNING]


async def test_notify_wakes_an_idle_subscriber_fast(tables, subscribers, wait_until):
    """D7: max_fetch_interval=30 s, yet each message is handled within ~1 s (typically ms)."""
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, max_fetch_interval=30.0)
    await wait_until(lambda: sub.listener.connected, timeout=5, message="LISTEN")
    latencies = []
    for i in range(5):
        await asyncio.sleep(0.2)  # idle: the fetch loop is in its 30 s sleep
        latencies.append(await _latency(tables, d, wait_until, b"m%d" % i, timeout=5))
    assert max(latencies) < 1.0, latencies


async def test_listen_failure_falls_back_to_polling_with_one_warning(tables, subscribers, wait_until, caplog):
    """D8: LISTEN cannot connect (closed port): exactly one WARNING however often it retries, and
    idle latency stays within max_fetch_interval."""
    caplog.set_level(logging.INFO, logger="outbox")
    max_interval = 0.5
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, max_fetch_interval=max_interval,
                            listen_connect_args={"port": _closed_port()})
    await asyncio.sleep(max_interval * 4)  # the listener has retried a few times; polling has backed off fully
    assert not sub.listener.connected
    warnings = _outbox_warnings(caplog)
    assert len(warnings) == 1 and sub.listener.warnings == 1, [r.getMessage() for r in warnings]
    assert "falling back to polling" in warnings[0].getMessage()
    for i in range(3):
        latency = await _latency(tables, d, wait_until, b"p%d" % i, timeout=max_interval + 5)
        assert latency <= max_interval + 0.5, latency
        await asyncio.sleep(max_interval)  # idle again
    assert len(_outbox_warnings(caplog)) == 1


async def test_listen_backend_killed_then_recovers(tables, subscribers, wait_until, caplog, db):
    """D8: pg_terminate_backend on the LISTEN connection: one WARNING, polling keeps delivering,
    the listener reconnects (a new backend) and NOTIFY wake-ups are back."""
    caplog.set_level(logging.INFO, logger="outbox")
    max_interval = 1.5
    app = f"listen_{uuid.uuid4().hex[:8]}"
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, max_fetch_interval=max_interval,
                            listen_connect_args={"server_settings": {"application_name": app}})
    await wait_until(lambda: sub.listener.connected, timeout=5, message="LISTEN")
    pids = [r[0] for r in await db.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", app)]
    assert len(pids) == 1
    assert await db.fetchval("SELECT pg_terminate_backend($1)", pids[0])
    await wait_until(lambda: not sub.listener.connected, timeout=max_interval + 2, message="the loss to be noticed")
    assert len(_outbox_warnings(caplog)) == 1

    # while LISTEN is down, polling delivers within max_fetch_interval
    latency = await _latency(tables, d, wait_until, b"during", timeout=max_interval + 5)
    assert latency <= max_interval + 0.5, latency

    # the listener comes back on a new backend (it retries every max_fetch_interval)
    await wait_until(lambda: sub.listener.connected, timeout=max_interval * 2 + 3, message="LISTEN to recover")
    new = [r[0] for r in await db.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", app)]
    assert len(new) == 1 and new != pids
    assert any("restored" in r.getMessage() for r in caplog.records)
    # and wake-ups are NOTIFY-fast again: each published right after the previous one was handled,
    # when a polling subscriber would sleep ~max_fetch_interval
    await asyncio.sleep(0.3)
    for i in range(3):
        latency = await _latency(tables, d, wait_until, b"after%d" % i, timeout=max_interval + 5)
        assert latency < 0.5, (i, latency)
        await asyncio.sleep(0.05)
    assert len(_outbox_warnings(caplog)) == 1


async def test_listen_false_polls_without_warnings(tables, subscribers, wait_until, caplog):
    caplog.set_level(logging.INFO, logger="outbox")
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, listen=False, max_fetch_interval=0.3)
    assert sub.listener is None
    await asyncio.sleep(0.5)
    latency = await _latency(tables, d, wait_until, b"x", timeout=5)
    assert latency <= 0.3 + 0.5
    assert _outbox_warnings(caplog) == []
