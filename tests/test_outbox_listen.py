"""LISTEN/NOTIFY: D7 (an idle subscriber wakes on NOTIFY, not a poll interval) and D8 (without LISTEN it
polls within max_fetch_interval, with one WARNING; a lost LISTEN backend is replaced).

No figure here is a wall-clock bound on a shared machine: what tells NOTIFY from polling is built into the
test (a poll interval far longer than the deadline), and how long a poll took is read on the database clock
(the publishing transaction's start to the claim, ``acquired_at - created_at``)."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

POLL_SLACK = 0.5  # seconds: a claim by polling lands within max_fetch_interval plus one fetch round trip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deliveries:
    """What the handler saw: per payload, seconds from the publishing transaction to the claim (database clock)."""

    def __init__(self) -> None:
        self.claim_delay: dict[bytes, float] = {}

    async def handler(self, msg) -> None:
        self.claim_delay[bytes(msg.payload)] = (msg.acquired_at - msg.created_at).total_seconds()


async def _delivered(tables, deliveries: Deliveries, wait_until, payload: bytes, deadline: float) -> float:
    """Publishes ``payload`` and polls until it is handled, at most ``deadline`` s; its database-clock claim delay."""
    await tables.publish(payload)
    await wait_until(lambda: payload in deliveries.claim_delay, timeout=deadline, interval=0.002,
                     message=f"{payload!r} within {deadline}s")
    return deliveries.claim_delay[payload]


def _outbox_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("outbox") and r.levelno == logging.WARNING]


async def test_notify_wakes_an_idle_subscriber(tables, subscribers, wait_until):
    """D7: with max_fetch_interval=30 s, polling cannot deliver an idle message within 15 s; NOTIFY does,
    for each of five."""
    max_interval = 30.0
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, max_fetch_interval=max_interval)
    await wait_until(lambda: sub.listener.connected, timeout=5, message="LISTEN")
    for i in range(5):
        await asyncio.sleep(0.2)  # idle: the fetch loop is in its 30 s sleep
        await _delivered(tables, d, wait_until, b"m%d" % i, deadline=max_interval / 2)
    assert sub.listener.notifications >= 5


async def test_listen_failure_falls_back_to_polling_with_one_warning(tables, subscribers, wait_until, caplog):
    """D8: LISTEN cannot connect (closed port): exactly one WARNING however often it retries, and
    idle messages are claimed within max_fetch_interval (database clock)."""
    caplog.set_level(logging.INFO, logger="outbox")
    max_interval = 0.5
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, max_fetch_interval=max_interval,
                            listen_connect_args={"port": _closed_port()})
    await wait_until(lambda: sub.listener.warnings == 1, timeout=5, message="the fallback warning")
    await asyncio.sleep(max_interval * 4)  # the listener has retried a few times; polling has backed off fully
    assert not sub.listener.connected
    warnings = _outbox_warnings(caplog)
    assert len(warnings) == 1 and sub.listener.warnings == 1, [r.getMessage() for r in warnings]
    assert "falling back to polling" in warnings[0].getMessage()
    for i in range(3):
        delay = await _delivered(tables, d, wait_until, b"p%d" % i, deadline=max_interval + 10)
        assert delay <= max_interval + POLL_SLACK, delay
        await asyncio.sleep(max_interval)  # idle again
    assert len(_outbox_warnings(caplog)) == 1 and sub.listener.notifications == 0


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
    await wait_until(lambda: not sub.listener.connected, timeout=max_interval + 5, message="the loss to be noticed")
    assert len(_outbox_warnings(caplog)) == 1

    # while LISTEN is down, polling claims within max_fetch_interval (database clock), without a NOTIFY
    heard = sub.listener.notifications
    delay = await _delivered(tables, d, wait_until, b"during", deadline=max_interval + 10)
    assert delay <= max_interval + POLL_SLACK, delay
    assert sub.listener.notifications == heard

    # the listener comes back on a new backend (it retries every max_fetch_interval)
    await wait_until(lambda: sub.listener.connected, timeout=max_interval * 2 + 10, message="LISTEN to recover")
    new = [r[0] for r in await db.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", app)]
    assert len(new) == 1 and new != pids
    assert any("restored" in r.getMessage() for r in caplog.records)
    # and NOTIFY wakes the fetch loop again: every message published is heard by the new backend
    for i in range(3):
        heard = sub.listener.notifications
        await _delivered(tables, d, wait_until, b"after%d" % i, deadline=max_interval + 10)
        await wait_until(lambda: sub.listener.notifications > heard, timeout=10, message="the NOTIFY")
    assert len(_outbox_warnings(caplog)) == 1


async def test_listen_false_polls_without_warnings(tables, subscribers, wait_until, caplog):
    caplog.set_level(logging.INFO, logger="outbox")
    max_interval = 0.3
    d = Deliveries()
    sub = await subscribers(tables.outbox, tables.engine, handler=d.handler, listen=False,
                            max_fetch_interval=max_interval)
    assert sub.listener is None
    await asyncio.sleep(0.5)
    delay = await _delivered(tables, d, wait_until, b"x", deadline=max_interval + 10)
    assert delay <= max_interval + POLL_SLACK, delay
    assert _outbox_warnings(caplog) == []
