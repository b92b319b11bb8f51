"""Retries and dead letters on the real database: R1 (schedule by database time), R2
(max_deliveries counts reclaims), R3 (atomic dead-lettering), R4 (DLQ drift is visible and heals);
whatever a handler raises is a failure, never a dead worker."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from harness.provision.postgres import asyncpg_url
from outbox import ConstantRetry, ExponentialRetry, NoRetry


async def _db_now(tables) -> object:
    return await tables.fetchval("SELECT clock_timestamp()")


@pytest.fixture
async def retry_writes(tables):
    """Every retry write of the test's table as (written_at, next_attempt_at), both the writing transaction's
    database clock: the delay a retry was scheduled with is exact, however loaded the machine."""
    log, fn = f"{tables.name}_retries", f"{tables.name}_note_retry"
    await tables.execute(f"CREATE TABLE {log} (seq serial, written_at timestamptz, next_attempt_at timestamptz)")
    await tables.execute(f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                         f"INSERT INTO {log} (written_at, next_attempt_at) VALUES (now(), NEW.next_attempt_at); "
                         f"RETURN NEW; END $$")
    await tables.execute(f"CREATE TRIGGER {fn} AFTER UPDATE OF next_attempt_at ON {tables.name} "
                         f"FOR EACH ROW EXECUTE FUNCTION {fn}()")

    async def writes() -> list[tuple[object, object]]:
        return [(r[0], r[1]) for r in await tables.fetch(f"SELECT written_at, next_attempt_at FROM {log} ORDER BY seq")]

    yield writes
    await tables.execute(f"DROP TRIGGER IF EXISTS {fn} ON {tables.name}")
    await tables.execute(f"DROP FUNCTION {fn}(); DROP TABLE {log}")


async def _row(tables, row_id):
    rows = await tables.fetch(f"SELECT * FROM {tables.name} WHERE id = $1", row_id)
    return rows[0] if rows else None


def test_retry_strategies_compute_the_documented_delays():
    """R1 (pure): defaults, jitter bounds, the cap, the attempt limit, NoRetry."""
    default = ExponentialRetry()
    assert (default.initial_delay_seconds, default.multiplier, default.max_delay_seconds,
            default.max_attempts, default.jitter_factor) == (1.0, 2.0, 300.0, 10, 0.2)
    for failures in range(1, 10):
        base = min(300.0, 2.0 ** (failures - 1))
        samples = [default.delay(failures) for _ in range(300)]
        assert all(base * 0.8 <= s <= base * 1.2 for s in samples), failures
        assert max(samples) - min(samples) > base * 0.1  # jitter really is applied
    assert default.delay(10) is None and default.delay(11) is None
    assert ExponentialRetry(jitter_factor=0).delay(9) == 256.0
    assert ExponentialRetry(jitter_factor=0, max_attempts=50).delay(30) == 300.0
    assert ConstantRetry(2.5, max_attempts=3).delay(2) == 2.5 and ConstantRetry(2.5, max_attempts=3).delay(3) is None
    assert NoRetry().delay(1) is None
    for bad in (dict(multiplier=0.5), dict(jitter_factor=1.0), dict(max_attempts=0), dict(initial_delay_seconds=-1)):
        with pytest.raises(ValueError):
            ExponentialRetry(**bad)


async def test_constant_retry_waits_delay_by_database_clock(tables, subscribers, wait_until, retry_writes):
    """R1: the retry write schedules next_attempt_at exactly delay after itself, after the failure (both
    database clock), and the retry is not delivered before next_attempt_at."""
    delay = 1.0
    deliveries, failed_at, scheduled = [], [], []

    async def handler(msg):
        deliveries.append(msg)
        if msg.deliveries == 1:
            failed_at.append(await _db_now(tables))
            raise ValueError("boom")
        scheduled.append((await _row(tables, msg.id))["next_attempt_at"])

    await subscribers(tables.outbox, tables.engine, handler=handler, retry=ConstantRetry(delay, max_attempts=3),
                      max_fetch_interval=0.1)
    (row_id,) = await tables.publish(b"x")
    await wait_until(lambda: len(deliveries) == 2, timeout=delay + 5, message="the retry")
    await wait_until(lambda: _gone(tables, row_id), timeout=5, message="the ack")
    first, second = deliveries
    ((written_at, next_attempt_at),) = await retry_writes()
    assert next_attempt_at == scheduled[0]
    assert (next_attempt_at - written_at).total_seconds() == pytest.approx(delay, abs=1e-6)
    assert written_at >= failed_at[0]  # written after the failure, so scheduled at least delay after it
    assert second.acquired_at >= scheduled[0]  # not early, by the server's clock
    assert (second.acquired_at - scheduled[0]).total_seconds() < 0.1 + 1.0  # max_fetch_interval + slack
    assert second.attempts == 1 and second.deliveries == 2


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


async def _gone(tables, row_id) -> bool:
    return await _row(tables, row_id) is None


async def test_exponential_retry_schedule_with_jitter_then_dlq(tables, subscribers, wait_until, retry_writes):
    """R1: each wait is initial * multiplier**(n-1) within the jitter bounds, from the retry write, by
    database time; after max_attempts failures the row is dead-lettered."""
    strategy = ExponentialRetry(initial_delay_seconds=0.3, multiplier=2.0, max_delay_seconds=1.0,
                                max_attempts=4, jitter_factor=0.25)
    failed_at, scheduled, seen = [], [], []

    async def handler(msg):
        seen.append((msg.deliveries, msg.attempts))
        if msg.deliveries > 1:
            scheduled.append((await _row(tables, msg.id))["next_attempt_at"])
        failed_at.append(await _db_now(tables))
        raise RuntimeError(f"fail {msg.deliveries}")

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, retry=strategy, max_fetch_interval=0.1)
    (row_id,) = await tables.publish(b"x", headers={"k": "v"})
    await wait_until(lambda: sub.metrics.counts["dlq_written"], timeout=10, message="dead letter")
    assert seen == [(1, 0), (2, 1), (3, 2), (4, 3)]
    writes = await retry_writes()
    assert [t_next for _, t_next in writes] == scheduled
    for n, ((written_at, t_next), t_fail) in enumerate(zip(writes, failed_at), start=1):
        base = min(1.0, 0.3 * 2 ** (n - 1))
        gap = (t_next - written_at).total_seconds()
        assert base * 0.75 <= gap <= base * 1.25, (n, gap)
        assert written_at >= t_fail
    (dead,) = await tables.dlq_rows()
    assert dead["original_id"] == row_id and dead["reason"] == "retries_exhausted"
    assert dead["attempts"] == 4 and dead["deliveries"] == 4 and "fail 4" in dead["last_error"]
    assert bytes(dead["payload"]) == b"x"
    assert await tables.count() == 0
    assert sub.metrics.counts["nacked_retry"] == 3
    assert sub.metrics.counts["nacked_terminal"] == sub.metrics.counts["dlq_written"] == 1


async def test_no_retry_first_failure_is_terminal(tables, subscribers, wait_until):
    """R1: NoRetry() dead-letters on the first failure; the handler runs once."""
    calls, outcomes = [], []

    async def handler(msg):
        calls.append(msg.id)
        raise KeyError("audit")

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, retry=NoRetry(),
                            on_settled=lambda m, o: outcomes.append(o))
    (row_id,) = await tables.publish({"a": 1}, headers={"h": 1})
    await wait_until(lambda: outcomes, timeout=5, message="settlement")
    await asyncio.sleep(0.3)
    assert calls == [row_id] and outcomes == ["dead_lettered"]
    (dead,) = await tables.dlq_rows()
    assert (dead["original_id"], dead["reason"], dead["attempts"], dead["deliveries"]) == (row_id, "retries_exhausted", 1, 1)
    assert bytes(dead["payload"]) == b'{"a":1}' and _json(dead["headers"]) == {"h": 1}
    assert await tables.count() == 0
    assert sub.metrics.counts["nacked_retry"] == 0 and sub.metrics.counts["dlq_written"] == 1


async def test_max_deliveries_counts_reclaims(tables, subscribers, wait_until):
    """R2: a handler that never finishes within its lease is claimed max_deliveries times; the
    next claim goes terminal to the DLQ without calling the handler."""
    ttl, max_deliveries = 0.5, 3
    calls = []
    release = asyncio.Event()

    async def handler(msg):
        calls.append(msg.deliveries)
        await release.wait()  # wedged

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, lease_ttl_seconds=ttl,
                            max_deliveries=max_deliveries, max_workers=max_deliveries + 1,
                            max_fetch_interval=0.1, graceful_timeout=0.2)
    (row_id,) = await tables.publish(b"wedge")
    await wait_until(lambda: tables.dlq_count(), timeout=ttl * max_deliveries + 5, message="dead letter")
    await asyncio.sleep(ttl + 0.3)  # nothing more happens
    assert calls == [1, 2, 3]
    (dead,) = await tables.dlq_rows()
    assert (dead["original_id"], dead["reason"], dead["deliveries"], dead["attempts"]) == (row_id, "max_deliveries", 4, 0)
    assert await tables.count() == 0
    await sub.stop()
    assert sub.metrics.counts["drain_timeout"] == 3  # the three wedged handlers were cut off
    assert sub.metrics.counts["lease_lost"] == 0 and sub.metrics.counts["acked"] == 0


async def test_max_deliveries_counts_retries_too(tables, subscribers, wait_until):
    """R2: deliveries count every claim; with retries left, the (max_deliveries+1)-th claim is terminal."""
    calls = []

    async def handler(msg):
        calls.append(msg.deliveries)
        raise RuntimeError("again")

    await subscribers(tables.outbox, tables.engine, handler=handler, max_deliveries=2,
                      retry=ConstantRetry(0.0, max_attempts=100), max_fetch_interval=0.1)
    await tables.publish(b"x")
    await wait_until(lambda: tables.dlq_count(), timeout=5, message="dead letter")
    assert calls == [1, 2]
    (dead,) = await tables.dlq_rows()
    assert (dead["reason"], dead["deliveries"], dead["attempts"]) == ("max_deliveries", 3, 2)


async def test_dead_letter_is_atomic_under_races(tables, dsn):
    """R3: concurrent dead-letter writes with the same token, racing an ack: the row ends in exactly
    one place, and in the DLQ at most once."""
    st = tables.outbox.statements
    conns = [await asyncpg.connect(dsn) for _ in range(6)]
    try:
        ids = await tables.publish(*[b"%d" % i for i in range(20)])
        leased = await conns[0].fetch(st.fetch, "q", 60.0, 100)
        assert len(leased) == 20
        for r in leased:
            writes = [c.fetchval(st.dead_letter, r["id"], r["acquired_token"], "race", "e", 1) for c in conns[:5]]
            writes.append(conns[5].fetchval(st.ack, [r["id"]], [r["acquired_token"]]))
            results = await asyncio.gather(*writes)
            assert sum(x is not None for x in results) == 1, results
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    in_outbox = {r["id"] for r in await tables.rows()}
    in_dlq = [r["original_id"] for r in await tables.dlq_rows()]
    assert not in_outbox
    assert len(in_dlq) == len(set(in_dlq))
    assert set(in_dlq) <= set(ids)


async def test_dlq_drift_rolls_back_then_heals(tables, subscribers, wait_until, caplog):
    """R4: with the DLQ refusing rows, the terminal write rolls back whole: the row stays in the
    outbox and nacked_terminal runs ahead of dlq_written. After the fix and the lease expiring the
    row reaches the DLQ exactly once."""
    ttl = 1.0
    outcomes = []
    await tables.execute(f"ALTER TABLE {tables.dlq} ADD CONSTRAINT drift CHECK (false) NOT VALID")

    async def handler(msg):
        raise RuntimeError("poison")

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, retry=NoRetry(), lease_ttl_seconds=ttl,
                            max_fetch_interval=0.1, on_settled=lambda m, o: outcomes.append((m.deliveries, o)))
    (row_id,) = await tables.publish(b"poison")
    await wait_until(lambda: len(outcomes) >= 2, timeout=ttl * 2 + 5, message="two failed dead-letter writes")
    assert outcomes[:2] == [(1, "error"), (2, "error")]
    (row,) = await tables.rows()
    assert row["id"] == row_id and row["acquired_token"] is not None  # stays, keeps its lease
    assert await tables.dlq_count() == 0
    assert sub.metrics.counts["dlq_written"] == 0 < sub.metrics.counts["nacked_terminal"]
    assert any("rolled back" in r.getMessage() for r in caplog.records)

    await tables.execute(f"ALTER TABLE {tables.dlq} DROP CONSTRAINT drift")
    await wait_until(lambda: tables.dlq_count(), timeout=ttl + 5, message="the healed dead letter")
    await asyncio.sleep(ttl + 0.5)  # another lease period: nothing moves twice
    (dead,) = await tables.dlq_rows()
    assert dead["original_id"] == row_id and dead["reason"] == "retries_exhausted"
    assert await tables.count() == 0
    assert sub.metrics.counts["dlq_written"] == 1
    assert sub.metrics.counts["nacked_terminal"] == dead["deliveries"]
    assert outcomes[-1] == (dead["deliveries"], "dead_lettered")


async def test_ack_batch_holding_a_row_twice_acks_only_the_live_lease(tables, dsn):
    """D6: one ack group may hold a row twice (a slow handler's stale lease and its reclaimer's live
    one); the DELETE matches the live token only and says which, so the stale one is lease_lost."""
    st = tables.outbox.statements
    conn = await asyncpg.connect(dsn)
    try:
        (row_id,) = await tables.publish(b"x")
        (stale,) = await conn.fetch(st.fetch, "q", 60.0, 10)
        await conn.execute(f"UPDATE {st.table} SET acquired_at = now() - interval '2 minutes'")
        (live,) = await conn.fetch(st.fetch, "q", 60.0, 10)
        assert stale["acquired_token"] != live["acquired_token"]
        done = await conn.fetch(st.ack, [row_id, row_id], [stale["acquired_token"], live["acquired_token"]])
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in done] == [(row_id, live["acquired_token"])]


class Fatal(BaseException):
    """A BaseException that is neither a cancellation nor the process ending."""


BAD_HANDLER_ERRORS = {b"cancelled": asyncio.CancelledError, b"base": Fatal, b"generator_exit": GeneratorExit}


async def test_any_exception_from_a_handler_is_a_handler_failure(tables, subscribers, wait_until):
    """A handler raising CancelledError, a custom BaseException or GeneratorExit is retried and
    dead-lettered like any failure; with max_workers=2 no worker dies, ordinary messages after them
    are delivered, and stop() still drains: a slow handler finishes, a hung one is cancelled at
    graceful_timeout and keeps its lease (a real cancellation is not a handler failure)."""
    calls: Counter[bytes] = Counter()
    delivered, outcomes = [], []
    hung = asyncio.Event()

    async def handler(msg):
        kind = bytes(msg.payload)
        calls[kind] += 1
        if kind in BAD_HANDLER_ERRORS:
            raise BAD_HANDLER_ERRORS[kind](f"from the handler: {kind.decode()}")
        if kind == b"slow":
            await asyncio.sleep(0.3)
        if kind == b"hang":
            hung.set()
            await asyncio.sleep(30)
        delivered.append(msg.id)

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=2,
                            retry=ConstantRetry(0.0, max_attempts=2), max_fetch_interval=0.1, graceful_timeout=1.0,
                            on_settled=lambda m, o: outcomes.append((bytes(m.payload), o)))
    bad_ids = await tables.publish(*BAD_HANDLER_ERRORS)
    await wait_until(lambda: _dlq_count_is(tables, 3), timeout=10, message="three dead letters")
    ok_ids = await tables.publish(*[b"ok"] * 20)
    await wait_until(lambda: len(delivered) == 20, timeout=10, message="the ordinary messages")
    assert sorted(delivered) == ok_ids
    assert {k: calls[k] for k in BAD_HANDLER_ERRORS} == {k: 2 for k in BAD_HANDLER_ERRORS}  # one retry each
    dead = {r["original_id"]: r for r in await tables.dlq_rows()}
    assert sorted(dead) == bad_ids
    for row_id, name in zip(bad_ids, ("CancelledError", "Fatal", "GeneratorExit")):
        assert (dead[row_id]["reason"], dead[row_id]["attempts"]) == ("retries_exhausted", 2)
        assert dead[row_id]["last_error"].startswith(f"{name}: from the handler"), dead[row_id]["last_error"]
    assert sub.metrics.counts["nacked_retry"] == 3 and sub.metrics.counts["dlq_written"] == 3
    assert len(sub._workers) == 2 and not any(t.done() for t in sub._workers)

    slow_id, hang_id = await tables.publish(b"slow", b"hang")
    await wait_until(lambda: hung.is_set() and calls[b"slow"], timeout=5, message="both handlers running")
    t0 = asyncio.get_running_loop().time()
    await asyncio.wait_for(sub.stop(), timeout=15)  # the hung handler sleeps 30 s: only cancelling it ends sooner
    took = asyncio.get_running_loop().time() - t0
    assert took >= 0.9, took  # not before graceful_timeout
    assert delivered[-1] == slow_id and (b"slow", "acked") in outcomes
    assert sub.metrics.counts["drain_timeout"] == 1 and sub.metrics.counts["nacked_retry"] == 3
    (row,) = await tables.rows()
    assert row["id"] == hang_id and row["acquired_token"] is not None and row["attempts"] == 0


async def test_a_worker_that_dies_anyway_is_logged_and_replaced(tables, subscribers, wait_until, caplog):
    """Outside the handler (here: an on_settled callback raising a BaseException or a stray
    CancelledError) a worker can still die; it is logged at ERROR and replaced, so the subscriber
    keeps max_workers workers."""
    delivered = []
    traps = {b"trap-fatal": Fatal, b"trap-cancelled": asyncio.CancelledError}

    async def handler(msg):
        if bytes(msg.payload) in traps:
            raise RuntimeError("fails, and settling it kills the worker")
        delivered.append(msg.id)

    def on_settled(msg, outcome):
        if outcome == "retry":
            raise traps[bytes(msg.payload)]("on_settled")

    sub = await subscribers(tables.outbox, tables.engine, handler=handler, max_workers=2,
                            retry=ConstantRetry(0.0, max_attempts=3), max_fetch_interval=0.1, on_settled=on_settled)
    await tables.publish(*traps)  # each fails 3 times: 2 retries (each kills its worker), then a dead letter
    await wait_until(lambda: _dlq_count_is(tables, 2), timeout=10, message="both traps dead-lettered")
    ok_ids = await tables.publish(*[b"ok"] * 10)
    await wait_until(lambda: len(delivered) == 10, timeout=10, message="the ordinary messages")
    assert sorted(delivered) == ok_ids
    assert len(sub._workers) == 2 and not any(t.done() for t in sub._workers)
    died = [r for r in caplog.records if r.name == "outbox.subscriber" and r.levelname == "ERROR" and "died" in r.getMessage()]
    assert sorted(r.exc_info[0].__name__ for r in died) == ["CancelledError"] * 2 + ["Fatal"] * 2


async def _dlq_count_is(tables, n) -> bool:
    return await tables.dlq_count() == n



@pytest.mark.parametrize("ending", [SystemExit, KeyboardInterrupt])
async def test_the_process_ending_in_a_handler_still_ends_it(tables, ending):
    """SystemExit / KeyboardInterrupt from a handler are not handler failures: they end the event loop
    (run here in a loop of its own, in a thread) and leave the row leased, with no retry recorded."""
    (row_id,) = await tables.publish(b"exit")

    async def run() -> None:
        engine = create_async_engine(asyncpg_url(tables.dsn), poolclass=NullPool)
        try:
            async def handler(msg):
                raise ending("the process ends")

            sub = tables.outbox.subscriber(engine, queue="q", handler=handler, max_fetch_interval=0.1)
            await sub.start()
            await asyncio.sleep(10)
        finally:
            await engine.dispose()

    def in_own_loop() -> BaseException | None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - what ended the loop is the result
            return exc
        return None

    ended = await asyncio.wait_for(asyncio.to_thread(in_own_loop), timeout=8)
    assert type(ended) is ending
    (row,) = await tables.rows()
    assert row["id"] == row_id and row["acquired_token"] is not None and row["attempts"] == 0
