"""Claiming and leases on the real database: D3 (no double claim), D4/D5 (lease judged and
reclaimed by the database clock), D6 (a stale ack / retry / dead-letter is a harmless no-op)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg
import pytest

from outbox import ConstantRetry, NoRetry
from outbox.message import from_us
from outbox.room import Room

TTL = 10.0


async def test_concurrent_fetchers_never_double_claim(tables, dsn):
    """D3: 16 connections race the fetch CTE until the table is drained; every id is claimed once."""
    n_rows, n_fetchers = 3000, 16
    ids = await tables.publish(*[b"x"] * n_rows)
    sql = tables.outbox.statements.fetch
    conns = [await asyncpg.connect(dsn) for _ in range(n_fetchers)]
    try:
        async def drain(conn: asyncpg.Connection) -> list[tuple[int, object]]:
            got = []
            while True:
                rows = await conn.fetch(sql, "q", TTL, 7)
                if not rows:
                    return got
                got += [(r["id"], r["acquired_token"]) for r in rows]
                await asyncio.sleep(0)

        results = await asyncio.gather(*(drain(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    claimed = [i for got in results for i, _ in got]
    dup = [i for i, n in Counter(claimed).items() if n > 1]
    assert not dup, f"ids claimed more than once: {dup[:10]}"
    assert sorted(claimed) == sorted(ids)
    assert sum(1 for got in results if got) > 1, "the race never happened: one fetcher took everything"
    # the database agrees: each row claimed exactly once, by the token its claimer got back
    rows = {r["id"]: r for r in await tables.rows()}
    assert {r["deliveries"] for r in rows.values()} == {1}
    tokens = {i: tok for got in results for i, tok in got}
    assert all(rows[i]["acquired_token"] == tokens[i] for i in ids)


async def test_lease_expiry_judged_by_database_clock(tables, db):
    """D4/D5: acquired_at = now() - ttl - 1s is reclaimed; now() - ttl + 5s is not."""
    st = tables.outbox.statements
    expired_id, fresh_id = await tables.publish(b"old", b"new")
    first = {r["id"]: r for r in await db.fetch(st.fetch, "q", TTL, 10)}
    assert set(first) == {expired_id, fresh_id}
    assert await db.fetch(st.fetch, "q", TTL, 10) == []  # both leases live
    await db.execute(f"UPDATE {tables.name} SET acquired_at = now() - make_interval(secs => $1) WHERE id = $2",
                     TTL + 1, expired_id)
    await db.execute(f"UPDATE {tables.name} SET acquired_at = now() - make_interval(secs => $1) WHERE id = $2",
                     TTL - 5, fresh_id)
    again = await db.fetch(st.fetch, "q", TTL, 10)
    assert [r["id"] for r in again] == [expired_id]
    assert again[0]["acquired_token"] != first[expired_id]["acquired_token"]
    assert again[0]["deliveries"] == 2
    fresh = await db.fetchrow(f"SELECT * FROM {tables.name} WHERE id = $1", fresh_id)
    assert fresh["acquired_token"] == first[fresh_id]["acquired_token"] and fresh["deliveries"] == 1
    # a lease stamped in the future (a worker with a fast clock would do that if it used its own clock)
    # is still judged against the server's now(): it is not expired
    await db.execute(f"UPDATE {tables.name} SET acquired_at = now() + interval '1 hour'")
    assert await db.fetch(st.fetch, "q", TTL, 10) == []


async def test_message_times_are_the_database_times(tables, db, subscribers, wait_until):
    """The claim sends its times as microseconds: a message's lease start and publish time are exactly the
    row's acquired_at and created_at, and one claim's rows share one lease start."""
    await tables.publish(b"a", b"b", b"c")
    seen: list[tuple[object, asyncpg.Record]] = []

    async def handler(msg):
        row = await db.fetchrow(f"SELECT acquired_at, created_at FROM {tables.name} WHERE id = $1", msg.id)
        seen.append((msg, row))

    await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=1, fetch_batch_size=10, listen=False)
    await wait_until(lambda: len(seen) == 3, timeout=10, message="deliveries")
    for msg, row in seen:
        assert msg.acquired_at == row["acquired_at"] and msg.created_at == row["created_at"]
        assert msg.acquired_at.tzinfo is not None and msg.acquired_at is seen[0][0].acquired_at


async def test_subscriber_reclaims_after_ttl_not_before(tables, db, subscribers, wait_until):
    """D5: a row leased by a 'dead' worker comes back no earlier than lease_ttl_seconds after it
    was leased and no later than ttl + max_fetch_interval (+ slack), by database timestamps."""
    ttl, max_interval = 1.0, 0.3
    (row_id,) = await tables.publish(b"orphan")
    (dead,) = await db.fetch(tables.outbox.statements.fetch, "q", ttl, 1)  # the worker that will "die"
    seen = []

    async def handler(msg):
        seen.append(msg)

    await subscribers(tables.outbox, tables.engine, handler=handler, lease_ttl_seconds=ttl,
                      max_fetch_interval=max_interval, listen=False)
    await wait_until(lambda: seen, timeout=ttl + max_interval + 5, message="reclaim")
    (msg,) = seen
    assert msg.id == row_id and msg.deliveries == 2 and msg.token != dead["acquired_token"]
    gap = (msg.acquired_at - from_us(dead["acquired_at_us"])).total_seconds()
    assert ttl <= gap <= ttl + max_interval + 1.0, gap
    await wait_until(lambda: _empty(tables), timeout=5, message="ack")


async def _empty(tables) -> bool:
    return await tables.count() == 0


@pytest.mark.parametrize("stale_write", ["ack", "retry", "dead_letter"])
async def test_stale_write_is_lease_lost(tables, subscribers, wait_until, stale_write):
    """D6: subscriber A's handler outlives its 1 s lease; B reclaims the row. A's late ack / retry /
    dead-letter matches nothing and is reported lease_lost (metric and on_settled) while B holds the
    row; B's ack then removes it, exactly once."""
    ttl = 1.0
    b_claimed = asyncio.Event()
    a_stale_done = asyncio.Event()
    outcomes: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}
    calls: list[tuple[str, int]] = []
    checked: list[asyncpg.Record] = []

    def settled(who):
        def on_settled(msg, outcome):
            outcomes[who].append((msg.deliveries, outcome))
            if who == "a":
                a_stale_done.set()
        return on_settled

    async def handler_a(msg):  # slow: returns (or fails) only after B has reclaimed the row
        calls.append(("a", msg.deliveries))
        await asyncio.wait_for(b_claimed.wait(), timeout=15)
        if stale_write != "ack":
            raise RuntimeError("late failure")

    async def handler_b(msg):
        calls.append(("b", msg.deliveries))
        b_claimed.set()
        await asyncio.wait_for(a_stale_done.wait(), timeout=10)
        # A's stale write has happened: the row is untouched and still leased by B
        checked.append(await tables.fetch(f"SELECT * FROM {tables.name} WHERE id = $1", msg.id))
        assert checked[-1][0]["acquired_token"] == msg.token

    retry = NoRetry() if stale_write == "dead_letter" else ConstantRetry(delay_seconds=0.0)
    # A listens (NOTIFY gets it the message) and otherwise sleeps: it will not reclaim B's row.
    a = await subscribers(tables.outbox, tables.engine, handler=handler_a, lease_ttl_seconds=ttl, retry=retry,
                          max_fetch_interval=30.0, on_settled=settled("a"))
    await wait_until(lambda: a.listener is not None and a.listener.connected, timeout=5, message="A's LISTEN")
    (row_id,) = await tables.publish(b"slow")
    await wait_until(lambda: calls, timeout=5, message="A's first delivery")
    # B polls every 0.1 s and judges A's lease with a 1 s TTL.
    b = await subscribers(tables.outbox, tables.engine, handler=handler_b, lease_ttl_seconds=ttl, retry=retry,
                          listen=False, max_fetch_interval=0.1, on_settled=settled("b"))
    await wait_until(lambda: outcomes["b"], timeout=10, message="B's ack")

    assert calls == [("a", 1), ("b", 2)]
    assert outcomes["a"] == [(1, "lease_lost")]
    assert outcomes["b"] == [(2, "acked")]
    assert a.metrics.counts["lease_lost"] == 1 and b.metrics.counts["lease_lost"] == 0
    assert a.metrics.counts["acked"] == 0 and b.metrics.counts["acked"] == 1
    assert a.metrics.counts["nacked_retry"] == 0 and a.metrics.counts["dlq_written"] == 0
    (row,) = checked[0]
    assert row["id"] == row_id and row["deliveries"] == 2 and row["attempts"] == 0 and row["last_error"] is None
    assert await tables.count() == 0
    assert await tables.dlq_count() == 0


def test_claims_ahead_only_while_handlers_keep_up():
    """A batch more is kept in hand, claimed whole, only while everything held would start within a quarter
    of the lease at the rate rows are being started; otherwise the bound stays fetch_batch_size + max_workers."""
    room = Room(batch=100, workers=4, lease_ttl=2.0)
    assert room.free(held=4) == 100 and room.min_claim == 50  # nothing measured yet
    room._paced, room.started = (time.monotonic() - 1.0, 0), 100  # 204 rows in 2 s: more than 2.0 / 4
    room.pace()
    assert room.free(held=4) == 100 and room.min_claim == 50
    room._paced, room.started = (time.monotonic() - 1.0, 100), 10_100  # 204 rows in 20 ms
    room.pace()
    assert room.free(held=4) == 200 and room.min_claim == 100
    room.claiming = 100  # a claim in flight reserves its rows
    assert room.free(held=4) == 100


async def test_slow_handlers_never_hold_more_than_a_batch_and_the_workers(tables, subscribers, wait_until):
    """Handlers too slow to start a batch more within a quarter of the lease: rows claimed and not finished
    (waiting, in a handler, or in a claim in flight) stay within fetch_batch_size + max_workers."""
    await tables.publish(*[b"x"] * 40)
    held: list[int] = []

    async def handler(msg):
        held.append(len(sub._pending) + len(sub._busy) + sub._claims.claiming)
        await asyncio.sleep(0.05)  # 2 workers: 40 rows/s, 10 in a quarter of the 1 s lease, less than 5 * 2 + 2

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=2, fetch_batch_size=5,
                            lease_ttl_seconds=1.0, listen=False)
    await wait_until(lambda: len(held) >= 40, timeout=30, message="drain")
    assert max(held) <= 5 + 2 and sub._claims.ahead == 0, held
