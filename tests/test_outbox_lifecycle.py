"""Lifecycle and resources: L1 (graceful drain), L2 (connection budget, sampled from
pg_stat_activity), L3 (an undersized pool is refused at start), O1 (metrics); numeric options
out of range (NaN, infinities, non-integers) are refused when built."""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid

import pytest
from sqlalchemy.pool import NullPool

from outbox import METRIC_NAMES, ConstantRetry, ExponentialRetry, Outbox, OutboxConfigError


# -- L1: graceful drain ----------------------------------------------------------------------------


async def test_stop_lets_in_flight_handlers_finish_and_acks_them(tables, subscribers, wait_until):
    started, finished, outcomes = [], [], []

    async def handler(msg):
        started.append(msg.id)
        await asyncio.sleep(0.6)
        finished.append(msg.id)

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=4, graceful_timeout=5.0,
                            on_settled=lambda m, o: outcomes.append(o))
    ids = await tables.publish(*[b"%d" % i for i in range(4)])
    await wait_until(lambda: len(started) == 4, timeout=5, message="4 handlers running")
    t0 = time.monotonic()
    await sub.stop()
    took = time.monotonic() - t0
    assert sorted(finished) == sorted(ids)
    assert outcomes == ["acked"] * 4 and sub.metrics.counts["acked"] == 4
    assert sub.metrics.counts["drain_timeout"] == 0
    assert await tables.count() == 0
    assert took < 5.0  # returned as soon as the handlers were done, not at graceful_timeout


async def test_stop_cancels_handlers_past_graceful_timeout_and_they_keep_their_lease(tables, subscribers, wait_until):
    cancelled, seen = [], []

    async def handler(msg):
        seen.append(msg)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(msg.id)
            raise

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, graceful_timeout=0.5,
                            lease_ttl_seconds=60)
    (row_id,) = await tables.publish(b"slow")
    await wait_until(lambda: seen, timeout=5, message="the handler to start")
    t0 = time.monotonic()
    await sub.stop()
    took = time.monotonic() - t0
    assert 0.4 <= took < 3.0, took
    assert cancelled == [row_id]
    assert sub.metrics.counts["drain_timeout"] == 1 and sub.metrics.counts["acked"] == 0
    (row,) = await tables.rows()
    assert row["acquired_token"] == seen[0].token and row["deliveries"] == 1  # lease kept, reclaimed per D5


async def test_stop_hands_back_fetched_but_unstarted_rows(tables, subscribers, wait_until):
    outcomes, started = [], []

    async def handler(msg):
        started.append(msg.id)
        await asyncio.sleep(0.5)

    ids = await tables.publish(*[b"%d" % i for i in range(5)])
    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=1, fetch_batch_size=10,
                            graceful_timeout=5.0, on_settled=lambda m, o: outcomes.append((m.id, o)))
    await wait_until(lambda: started, timeout=5, message="the first handler")

    async def all_leased():
        return all(r["acquired_token"] is not None for r in await tables.rows())

    assert await all_leased()  # one batch took all five: one running, four queued locally
    await sub.stop()
    (first,) = started
    assert dict(outcomes) == {i: ("acked" if i == first else "released") for i in ids}
    rows = await tables.rows()
    assert [r["id"] for r in rows] == [i for i in ids if i != first]
    assert all(r["acquired_token"] is None and r["acquired_at"] is None and r["deliveries"] == 0 for r in rows)
    assert sub.metrics.counts["fetched"] == 5 and sub.metrics.counts["acked"] == 1


async def test_stop_stops_fetching_at_once(tables, subscribers, wait_until):
    seen = []

    async def handler(msg):
        seen.append(msg.id)

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_fetch_interval=0.05)
    await sub.stop()
    await tables.publish(b"after stop")
    await asyncio.sleep(0.4)
    assert seen == [] and await tables.count() == 1


# -- L2 / L3: connections ----------------------------------------------------------------------------


async def test_connection_budget_under_load(tables, engine_factory, subscribers, db, wait_until):
    """L2: a subscriber with max_workers=N under load (acks, retries, dead letters) never holds more than
    N+1 pool connections, plus exactly one LISTEN connection (counted by application_name)."""
    n = 4
    pool_app, listen_app = f"pool_{uuid.uuid4().hex[:8]}", f"listen_{uuid.uuid4().hex[:8]}"
    eng = engine_factory(pool_size=3 * n, max_overflow=0,
                         connect_args={"server_settings": {"application_name": pool_app}})
    handled = []

    async def handler(msg):
        handled.append(msg.id)
        await asyncio.sleep(random.uniform(0, 0.01))
        if random.random() < 0.3:
            raise RuntimeError("flaky")

    samples: list[tuple[int, int]] = []
    sub = await subscribers(tables.outbox, eng, handler=handler, max_workers=n, fetch_batch_size=20,
                            retry=ConstantRetry(0.0, max_attempts=3), max_fetch_interval=0.05,
                            listen_connect_args={"server_settings": {"application_name": listen_app}})
    await wait_until(lambda: sub.listener.connected, timeout=5, message="LISTEN")
    for _ in range(5):
        await tables.publish(*[b"m"] * 200)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE application_name = $1), count(*) FILTER (WHERE application_name = $2) "
            "FROM pg_stat_activity", pool_app, listen_app)
        samples.append((row[0], row[1]))
        if await db.fetchval(f"SELECT count(*) FROM {tables.name}") == 0:
            break
        await asyncio.sleep(0.005)
    assert await tables.count() == 0, "the load did not drain"
    assert await tables.dlq_count() > 0 and len(handled) > 1000  # retries and dead letters happened
    peak_pool = max(s[0] for s in samples)
    assert 2 <= peak_pool <= n + 1, peak_pool
    assert {s[1] for s in samples} == {1}
    # the pool agrees: it never had to open more than N+1 connections
    assert eng.pool.checkedin() + eng.pool.checkedout() <= n + 1


async def test_undersized_pool_is_refused_at_start(tables, engine_factory):
    """L3: a pool smaller than max_workers + 1 is refused at start, naming pool_size."""
    eng = engine_factory(pool_size=3, max_overflow=1)
    sub = tables.outbox.subscriber(eng, queue="q", handler=_noop, max_workers=4)
    with pytest.raises(OutboxConfigError, match="pool_size") as info:
        await sub.start()
    assert "max_workers + 1 = 5" in str(info.value)
    assert sub._fetcher is None and sub.listener is None  # nothing was started
    # exactly the budget is fine
    ok = tables.outbox.subscriber(eng, queue="q", handler=_noop, max_workers=3)
    await ok.start()
    await ok.stop()


async def test_unbounded_pools_are_not_refused(tables, engine_factory):
    """max_overflow=-1 (no overflow limit) and NullPool have no ceiling to exceed."""
    for eng in (engine_factory(pool_size=1, max_overflow=-1), engine_factory(poolclass=NullPool)):
        sub = tables.outbox.subscriber(eng, queue="q", handler=_noop, max_workers=4)
        await sub.start()
        await sub.stop()


async def _noop(msg) -> None:
    return None


# -- options: refused when built, not at the first fetch ---------------------------------------------

SECONDS = "a finite number > 0 and <= 1e+09"
COUNT = "an int >= 1 and <= 2147483647"
BAD_KNOBS = [
    ("lease_ttl_seconds", math.nan, SECONDS), ("lease_ttl_seconds", math.inf, SECONDS),
    ("lease_ttl_seconds", 1e10, SECONDS), ("lease_ttl_seconds", 0, SECONDS), ("lease_ttl_seconds", True, SECONDS),
    ("statement_timeout", math.nan, SECONDS), ("statement_timeout", -math.inf, SECONDS),
    ("graceful_timeout", math.inf, SECONDS), ("max_fetch_interval", math.inf, SECONDS),
    ("min_fetch_interval", math.nan, SECONDS), ("min_fetch_interval", "0.1", SECONDS),
    ("fetch_batch_size", 1.5, COUNT), ("fetch_batch_size", 100.0, COUNT), ("fetch_batch_size", True, COUNT),
    ("fetch_batch_size", 2**63, COUNT), ("max_workers", 2.0, COUNT), ("max_workers", 0, COUNT),
    ("max_deliveries", 1.5, COUNT), ("max_deliveries", math.nan, COUNT), ("max_deliveries", False, COUNT),
]


@pytest.mark.parametrize("knob,value,allowed", BAD_KNOBS, ids=[f"{k}={v!r}" for k, v, _ in BAD_KNOBS])
def test_bad_subscriber_knobs_are_refused_when_built(tables, knob, value, allowed):
    """NaN, infinities, non-integers and bools are refused by the constructor with one error naming the
    knob and its range; lease_ttl_seconds=nan used to be accepted and then fail every fetch."""
    with pytest.raises(OutboxConfigError) as info:
        tables.outbox.subscriber(tables.engine, queue="q", handler=_noop, **{knob: value})
    assert str(info.value) == f"{knob} must be {allowed}, got {value!r}"


BAD_RETRY_KNOBS = [
    (ExponentialRetry, "initial_delay_seconds", math.nan, "a finite number >= 0 and <= 1e+09"),
    (ExponentialRetry, "initial_delay_seconds", math.inf, "a finite number >= 0 and <= 1e+09"),
    (ExponentialRetry, "multiplier", math.nan, "a finite number >= 1"),
    (ExponentialRetry, "multiplier", math.inf, "a finite number >= 1"),
    (ExponentialRetry, "max_delay_seconds", math.inf, "a finite number >= 0 and <= 1e+09"),
    (ExponentialRetry, "max_attempts", 1.5, COUNT), (ExponentialRetry, "max_attempts", True, COUNT),
    (ExponentialRetry, "jitter_factor", math.nan, "a finite number >= 0 and < 1"),
    (ConstantRetry, "delay_seconds", math.nan, "a finite number >= 0 and <= 1e+09"),
    (ConstantRetry, "delay_seconds", math.inf, "a finite number >= 0 and <= 1e+09"),
    (ConstantRetry, "max_attempts", 2.0, COUNT),
]


@pytest.mark.parametrize("cls,knob,value,allowed", BAD_RETRY_KNOBS,
                         ids=[f"{c.__name__}.{k}={v!r}" for c, k, v, _ in BAD_RETRY_KNOBS])
def test_bad_retry_knobs_are_refused_when_built(cls, knob, value, allowed):
    with pytest.raises(OutboxConfigError) as info:
        cls(**{knob: value})
    assert str(info.value) == f"{cls.__name__}.{knob} must be {allowed}, got {value!r}"


def test_bad_outbox_knobs_are_refused():
    for bad in (True, 1.5, 0, math.inf):
        with pytest.raises(OutboxConfigError, match=f"max_payload_bytes must be {COUNT}"):
            Outbox("ob", max_payload_bytes=bad)


async def test_knobs_at_the_top_of_their_ranges_work_on_the_server(tables, subscribers, wait_until):
    """The upper bounds are honest: a lease and a retry delay at the cap are within PostgreSQL's
    interval range (the fetch and the retry write succeed), a batch size at the cap fits LIMIT, and
    ExponentialRetry with many attempts caps its delay instead of overflowing a float."""
    big = ExponentialRetry(jitter_factor=0, max_attempts=2**31 - 1)
    assert big.delay(5000) == 300.0
    assert ExponentialRetry(initial_delay_seconds=0, jitter_factor=0, max_attempts=10_000).delay(5000) == 0.0
    outcomes = []

    async def handler(msg):
        raise RuntimeError("much later")

    await subscribers(tables.outbox, tables.engine, handler=handler, lease_ttl_seconds=1e9, statement_timeout=1e9,
                      fetch_batch_size=2**31 - 1, max_deliveries=2**31 - 1,
                      retry=ExponentialRetry(initial_delay_seconds=1e9, max_delay_seconds=1e9, jitter_factor=0.999),
                      on_settled=lambda m, o: outcomes.append(o))
    (row_id,) = await tables.publish(b"x")
    await wait_until(lambda: outcomes, timeout=5, message="the retry write")
    assert outcomes == ["retry"]
    (row,) = await tables.rows()
    wait = (row["next_attempt_at"] - await tables.fetchval("SELECT now()")).total_seconds()
    assert 1e9 * 0.001 - 10 <= wait <= 1e9 * 1.999, wait


# -- O1: metrics -------------------------------------------------------------------------------------


async def test_metrics_recorder_gets_every_o1_name_with_the_queue_label(tables, subscribers, wait_until):
    assert set(METRIC_NAMES) == {"fetched", "acked", "nacked_retry", "nacked_terminal", "dlq_written",
                                 "lease_lost", "drain_timeout"}
    recorded: list[tuple[str, float, dict]] = []

    async def handler(msg):
        kind = bytes(msg.payload)
        if kind == b"fail-twice":
            raise RuntimeError("x")  # retried once, then terminal
        if kind == b"stolen":  # another worker reclaims the row while we work: our ack is lease_lost
            await tables.execute(f"UPDATE {tables.name} SET acquired_token = gen_random_uuid(), acquired_at = now(), "
                                 f"deliveries = deliveries + 1 WHERE id = $1", msg.id)
        if kind == b"hang":
            await asyncio.sleep(30)

    sub = await subscribers(tables.outbox, tables.engine, queue="q", handler=handler, max_fetch_interval=0.05,
                            retry=ConstantRetry(0.0, max_attempts=2), graceful_timeout=0.3,
                            metrics_recorder=lambda name, inc, labels: recorded.append((name, inc, dict(labels))))
    await tables.publish(b"ok", b"fail-twice", b"stolen", b"hang")
    await wait_until(lambda: sub.metrics.counts["dlq_written"] and sub.metrics.counts["lease_lost"]
                     and sub.metrics.counts["acked"], timeout=5, message="every outcome")
    await sub.stop()
    names = {name for name, _, _ in recorded}
    assert names == set(METRIC_NAMES)
    assert all(labels == {"queue": "q"} and inc > 0 for _, inc, labels in recorded)
    totals = {name: sum(inc for n, inc, _ in recorded if n == name) for name in METRIC_NAMES}
    assert totals == {k: float(v) for k, v in sub.metrics.counts.items()}
    assert totals["fetched"] == 5 and totals["acked"] == 1 and totals["nacked_retry"] == 1
    assert totals["nacked_terminal"] == totals["dlq_written"] == 1
    assert totals["lease_lost"] == 1 and totals["drain_timeout"] == 1
