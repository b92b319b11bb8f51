"""The subscriber: lease-only delivery with token-guarded acks (D1-D8, R1-R4, L1, L2, O1).

Shape, per subscriber:

- a fetcher claims up to ``fetch_batch_size`` rows in one CTE (``FOR UPDATE
  SKIP LOCKED``; available iff unleased or leased longer ago than
  ``lease_ttl_seconds`` by the database clock) whenever there is room, and
  polls when idle. How many rows it may hold and how far ahead it claims:
  :class:`outbox.room.Room`;
- ``max_workers`` tasks run the handler, woken one at a time as rows arrive;
- successful messages are acked in groups by one acker: one DELETE for many
  rows, each guarded by its own lease token; rows the DELETE did not match
  were reclaimed by someone else and are reported ``lease_lost``;
- failures are retried (``next_attempt_at`` by the database clock) or, when
  terminal, dead-lettered in one statement. Whatever a handler raises is a
  failure, BaseExceptions included (CancelledError, GeneratorExit, ...): only
  ``KeyboardInterrupt``/``SystemExit`` and a real cancellation of the worker
  (stop()) pass through, and a worker that dies anyway is replaced.

Connections: the fetcher holds one pool connection; the acker and the
retry/dead-letter writes share the other ``max_workers`` (the acker keeps one
while acks keep coming), so the subscriber never holds more than
``max_workers + 1`` pool connections, plus one raw LISTEN connection (L2).

What a SIGKILL costs: handlers in flight and acks not yet flushed (at most one
ack group, flushed as soon as the acker is free) are redelivered once their
lease expires, within ``lease_ttl_seconds + max_fetch_interval``: duplicates,
never loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox.config import MAX_COUNT, MAX_SECONDS, check_number
from outbox.errors import OutboxConfigError
from outbox.listener import Listener
from outbox.message import Message, from_us
from outbox.metrics import Metrics, MetricsRecorder
from outbox.publish import check_queue
from outbox.retry import ExponentialRetry, RetryStrategy
from outbox.room import Room
from outbox.sql import Statements

log = logging.getLogger("outbox.subscriber")

#: Errors that mean "the database is unreachable or the connection is gone": retry later.
TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
             asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError,
             sa_exc.TimeoutError, sa_exc.DBAPIError)  # SQLAlchemy wraps errors of connect/checkout only


Handler = Callable[[Message], Awaitable[None]]
SettledCallback = Callable[[Message, str], None]
"""``on_settled(message, outcome)``: acked | retry | dead_lettered | dropped | lease_lost | released."""


class _OutageLog:
    """Logs the first failure of an outage at ERROR and the recovery at INFO, not every retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            log.error("%s failed: %s: %s; retrying", self.what, type(exc).__name__, exc)
            self.down = True

    def ok(self) -> None:
        if self.down:
            log.info("%s recovered", self.what)
            self.down = False


class Subscriber:
    def __init__(
        self,
        engine: AsyncEngine,
        statements: Statements,
        *,
        queue: str,
        handler: Handler,
        max_workers: int = 8,
        fetch_batch_size: int = 100,
        lease_ttl_seconds: float = 60.0,
        max_deliveries: int | None = None,
        retry: RetryStrategy | None = None,
        graceful_timeout: float = 15.0,
        min_fetch_interval: float = 0.05,
        max_fetch_interval: float = 10.0,
        statement_timeout: float = 30.0,
        listen: bool = True,
        listen_connect_args: dict[str, Any] | None = None,
        metrics_recorder: MetricsRecorder | None = None,
        on_settled: SettledCallback | None = None,
    ) -> None:
        self.queue = check_queue(queue)
        counts = {"max_workers": max_workers, "fetch_batch_size": fetch_batch_size, "max_deliveries": max_deliveries}
        for name, count in counts.items():
            if count is not None:  # max_deliveries=None: no limit
                check_number(name, count, 1, MAX_COUNT, integer=True)
        seconds = {"lease_ttl_seconds": lease_ttl_seconds, "graceful_timeout": graceful_timeout,
                   "min_fetch_interval": min_fetch_interval, "max_fetch_interval": max_fetch_interval,
                   "statement_timeout": statement_timeout}
        for name, value in seconds.items():
            check_number(name, value, 0, MAX_SECONDS, above=True)
        if min_fetch_interval > max_fetch_interval:
            raise OutboxConfigError("min_fetch_interval must not exceed max_fetch_interval")
        if not callable(handler):
            raise OutboxConfigError(f"handler must be an async callable, got {type(handler).__name__}")
        if engine.dialect.driver != "asyncpg":
            raise OutboxConfigError(f"the reference outbox needs a postgresql+asyncpg engine, got {engine.dialect.driver}")
        self.engine = engine
        self.sql = statements
        self.handler = handler
        self.max_workers = max_workers
        self.fetch_batch_size = fetch_batch_size
        self.lease_ttl_seconds = float(lease_ttl_seconds)
        self.max_deliveries = max_deliveries
        self.retry: RetryStrategy = retry if retry is not None else ExponentialRetry()
        self.graceful_timeout = graceful_timeout
        self.min_fetch_interval = min_fetch_interval
        self.max_fetch_interval = max_fetch_interval
        self.statement_timeout = statement_timeout
        self.metrics = Metrics(self.queue, metrics_recorder)
        self.on_settled = on_settled
        self._listen = listen
        self._listen_connect_args = listen_connect_args or {}
        self.listener: Listener | None = None
        self._pending: deque[Message] = deque()  # claimed, not started: a plain deque, cheaper than a Queue
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for rows
        self._calling = False  # an idle worker was woken for rows and has not run yet
        self._wake = asyncio.Event()
        self._claims = Room(fetch_batch_size, max_workers, self.lease_ttl_seconds)
        self._want_room = False  # a claimer waits for room; the worker that makes it wakes it
        self._claim_due = False  # woken for room, not yet run: workers yield to it
        self._stopping = asyncio.Event()
        self._acks: list[Message] = []
        self._ack_ready = asyncio.Event()
        # The fetcher holds one pool connection; acks and retry/dead-letter writes share the other
        # max_workers, so the subscriber never holds more than max_workers + 1 (L2).
        self._writers = asyncio.Semaphore(max_workers)
        self._busy: set[asyncio.Task[Any]] = set()  # workers running a handler right now
        self._workers: list[asyncio.Task[None]] = []
        self._fetcher: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._fetch_outage = _OutageLog(f"fetch on queue {self.queue!r}")

    # -- lifecycle -------------------------------------------------------------
    @property
    def connection_budget(self) -> int:
        """Pool connections this subscriber may hold at once (the LISTEN connection is extra)."""
        return self.max_workers + 1

    def _check_pool(self) -> None:
        pool = self.engine.pool
        size = getattr(pool, "size", None)
        if size is None:  # NullPool and friends: no limit to check
            return
        overflow = getattr(pool, "_max_overflow", 0)
        if overflow < 0:  # max_overflow=-1: SQLAlchemy's "no overflow limit"
            return
        capacity = size() + overflow
        if capacity < self.connection_budget:
            raise OutboxConfigError(
                f"engine pool holds {capacity} connections but this subscriber needs max_workers + 1 = "
                f"{self.connection_budget} (QueuePool limit would be exceeded); create the engine with "
                f"pool_size >= {self.connection_budget} (sum over all subscribers sharing it), or lower max_workers"
            )

    async def start(self) -> None:
        """Starts fetching; never validates the schema (L5: that is for a health check)."""
        self._check_pool()
        self._stopping.clear()
        if self._listen:
            self.listener = Listener(
                connect_kwargs=self._listen_kwargs(), channel=self.sql.channel, listen_sql=self.sql.listen,
                queue=self.queue,
                wake=self._wake.set, retry_interval=self.max_fetch_interval,
            )
            self._listen_task = asyncio.create_task(self.listener.run(), name="outbox-listen")
        self._acker = asyncio.create_task(self._ack_loop(), name="outbox-ack")
        self._fetcher = asyncio.create_task(self._fetch_loop(), name="outbox-fetch")
        self._workers = [self._spawn_worker(i) for i in range(self.max_workers)]

    async def stop(self) -> None:
        """Graceful drain (L1): stop fetching now, hand back unstarted rows, let handlers
        finish for up to ``graceful_timeout``, flush acks, then cancel what is left."""
        deadline = time.monotonic() + self.graceful_timeout
        self._stopping.set()
        self._wake.set()
        for task in self._workers:  # idle workers stop now; busy ones finish their message, then stop
            if task not in self._busy:
                task.cancel()
        if self._fetcher is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._fetcher, timeout=max(0.01, deadline - time.monotonic()))
        unstarted = list(self._pending)
        self._pending.clear()
        if unstarted:  # best effort within the deadline: otherwise the lease hands them back
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._release(unstarted), timeout=max(0.01, deadline - time.monotonic()))
        busy = [t for t in self._workers if t in self._busy]
        if busy:
            _, late = await asyncio.wait(busy, timeout=max(0.0, deadline - time.monotonic()))
            if late:
                self.metrics.add("drain_timeout", len(late))
                log.warning("graceful_timeout=%ss passed with %d handlers in flight; cancelling them, "
                            "their rows are reclaimed after lease_ttl_seconds", self.graceful_timeout, len(late))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        if self._acker is not None:
            self._ack_ready.set()
            try:
                await asyncio.wait_for(self._acker, timeout=max(1.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("final ack flush did not finish; %d rows will be redelivered", len(self._acks))
        if self._listen_task is not None:
            self._listen_task.cancel()
        await asyncio.gather(*self._workers, *filter(None, [self._listen_task]), return_exceptions=True)
        self._workers, self._fetcher, self._acker, self._listen_task = [], None, None, None

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- connections -------------------------------------------------------------
    def _listen_kwargs(self) -> dict[str, Any]:
        url = self.engine.url
        kwargs: dict[str, Any] = {"host": url.host, "port": url.port, "user": url.username,
                                  "password": url.password, "database": url.database,
                                  "timeout": self.statement_timeout}
        return {**{k: v for k, v in kwargs.items() if v is not None}, **self._listen_connect_args}

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection's asyncpg driver; a broken one is invalidated, not returned."""
        async with self.engine.connect() as conn:
            try:
                yield await _driver(conn)
            except TRANSIENT:
                await conn.invalidate()
                raise

    # -- fetching ----------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        """The fetcher: claims on its own connection whenever there is room, polls when idle."""
        idle = self.min_fetch_interval
        while not self._stopping.is_set():
            try:
                async with self._connection() as conn:
                    while not self._stopping.is_set():
                        if self._room() < self._claims.min_claim:
                            await self._wait_room()  # or a NOTIFY, or stop()
                            continue
                        self._wake.clear()
                        claimed = await self._claim(conn)
                        self._fetch_outage.ok()
                        if claimed:
                            idle = self.min_fetch_interval
                        else:
                            listening = self.listener is not None and self.listener.connected
                            await self._sleep(self.max_fetch_interval if listening else idle)
                            idle = min(idle * 2, self.max_fetch_interval)
            except TRANSIENT as exc:
                self._fetch_outage.failed(exc)
                await self._pause(idle)
                idle = min(idle * 2, self.max_fetch_interval)
            except Exception as exc:  # e.g. the table is missing: loud, then keep trying; the loop never dies
                log.error("fetch on %r failed: %s: %s; retrying in max_fetch_interval", self.queue,
                          type(exc).__name__, exc, exc_info=True)
                await self._pause(self.max_fetch_interval)

    async def _claim(self, conn: asyncpg.Connection) -> int:
        """One claim of up to the free room, reserved while it runs; the rows go to the workers."""
        claims = self._claims
        claims.pace()
        limit = min(self._room(), self.fetch_batch_size)
        claims.claiming += limit
        try:
            rows = await conn.fetch(self.sql.fetch, self.queue, self.lease_ttl_seconds, limit,
                                    timeout=self.statement_timeout)
        finally:
            claims.claiming -= limit
        if rows:
            self.metrics.add("fetched", len(rows))
            queue = self.queue
            lease_us = rows[0][4]  # now() of the claim: the same for every row
            lease_at = from_us(lease_us)
            self._pending.extend([
                Message(r[0], queue, r[1], r[2], r[3], lease_at if r[4] == lease_us else from_us(r[4]), r[5], r[6],
                        r[7]) for r in rows])
            self._call_worker()
        return len(rows)

    def _room(self) -> int:
        """Rows that may be claimed now (see :class:`outbox.room.Room`)."""
        return self._claims.free(len(self._pending) + len(self._busy))

    async def _wait_room(self) -> None:
        """Until a worker frees room for a claim, or a NOTIFY or stop() wakes the fetcher."""
        self._want_room = True
        self._wake.clear()
        await self._wake.wait()
        self._claim_due = False

    async def _sleep(self, seconds: float) -> None:
        """Idle wait: a NOTIFY, a worker running low or stop() ends it early."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    async def _pause(self, seconds: float) -> None:
        """Back-off after an error: only stop() ends it early, so a failing fetch never spins."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- handling ------------------------------------------------------------------
    def _spawn_worker(self, i: int) -> asyncio.Task[None]:
        task = asyncio.create_task(self._work_loop(), name=f"outbox-worker-{i}")
        task.add_done_callback(self._worker_done)
        return task

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker that died (a settlement callback raised a BaseException, say) is logged and replaced:
        otherwise the fetch loop would go on leasing rows for fewer and fewer workers."""
        try:
            exc = task.exception()
        except asyncio.CancelledError as cancelled:
            if task.cancelling():
                return  # cancelled by stop() or by the loop shutting down
            exc = cancelled  # a stray CancelledError raised inside the worker: it died
        if exc is None or isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return
        log.error("%s on %r died (%s: %s)", task.get_name(), self.queue, type(exc).__name__, exc, exc_info=exc)
        if not self._stopping.is_set() and task in self._workers:
            i = self._workers.index(task)
            self._workers[i] = self._spawn_worker(i)
            log.info("%s on %r restarted", task.get_name(), self.queue)

    async def _work_loop(self) -> None:
        """Runs handlers one at a time; no task per message, which keeps the hot path short.

        Idle workers are woken one at a time, each by the one before it if rows are left when it takes
        one: a batch of fast handlers is run by the worker that gets there first, without waking the
        others for nothing, and slow ones bring in another worker per loop iteration. A handler that
        never suspends would keep the event loop from everything else while rows are queued, so once a
        worker has freed the fetcher's room every worker yields until the fetcher has run: the next
        claim is sent now, not when the queue has run dry."""
        me = asyncio.current_task()
        assert me is not None
        pending, claims = self._pending, self._claims
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if not pending:
                called: asyncio.Future[None] = loop.create_future()
                self._idle.append(called)
                try:
                    await called
                finally:
                    if called.done() and not called.cancelled():
                        self._calling = False
                continue
            msg = pending.popleft()
            claims.started += 1
            if pending and not self._calling:
                self._call_worker()
            self._busy.add(me)
            try:
                if self._want_room and self._room() >= claims.min_claim:
                    self._want_room = False
                    self._claim_due = True
                    self._wake.set()
                if self._claim_due:
                    await asyncio.sleep(0)
                await self._handle(msg)
            except Exception:  # noqa: BLE001 - a worker must outlive any failure; the lease decides the row
                log.exception("settling row %s failed; it is redelivered after its lease expires", msg.id)
            finally:
                self._busy.discard(me)

    def _call_worker(self) -> None:
        """Wakes one idle worker for the rows waiting, unless one is already on its way."""
        if self._calling:
            return
        while self._idle:
            called = self._idle.popleft()
            if not called.done():  # a worker cancelled while idle leaves a cancelled future behind
                called.set_result(None)
                self._calling = True
                return

    async def _handle(self, msg: Message) -> None:
        if self.max_deliveries is not None and msg.deliveries > self.max_deliveries:
            await self._terminal(msg, "max_deliveries", f"claimed {msg.deliveries} times, max_deliveries={self.max_deliveries}", 0)
            return
        try:
            await self.handler(msg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever the handler raises is a failure, not a crash
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # stop() cancels this worker; a CancelledError of the handler's own is a failure
            try:
                await self._failed(msg, exc)
            except Exception:  # the write failed for a reason we cannot classify: the lease decides
                log.exception("could not record the failure of row %s; it is redelivered after its lease", msg.id)
                self._settled(msg, "error")
            return
        self._acks.append(msg)
        self._ack_ready.set()

    async def _failed(self, msg: Message, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        delay = self.retry.delay(msg.attempts + 1)
        if delay is None:
            await self._terminal(msg, "retries_exhausted", error, 1)
            return
        matched = await self._write(msg, self.sql.retry, float(delay), error)
        if matched:
            self.metrics.add("nacked_retry")
            self._settled(msg, "retry")
        elif matched is False:
            self._lease_lost(msg)

    async def _terminal(self, msg: Message, reason: str, error: str, failed: int) -> None:
        self.metrics.add("nacked_terminal")
        if self.sql.dlq_table is None:
            matched = await self._write(msg, self.sql.drop)
            if matched:
                self._settled(msg, "dropped")
            elif matched is False:
                self._lease_lost(msg)
            return
        try:
            moved = await self._write(msg, self.sql.dead_letter, reason, error, failed)
        except asyncpg.PostgresError as exc:
            # The statement rolled back whole: the row stays, keeps its lease and comes back after
            # the TTL (R4). nacked_terminal now runs ahead of dlq_written, which is the alert.
            log.error("dead-letter write for row %s failed and rolled back (%s: %s); the row stays in %s "
                      "and is retried after its lease expires", msg.id, type(exc).__name__, exc, self.sql.table)
            self._settled(msg, "error")
            return
        if moved:
            self.metrics.add("dlq_written")
            self._settled(msg, "dead_lettered")
        elif moved is False:
            self._lease_lost(msg)

    async def _write(self, msg: Message, sql: str, *args: Any) -> bool | None:
        """Runs one token-guarded write: True if it matched the row, False if the lease was lost,
        None if the database could not be reached (the lease then decides: redelivery after the TTL)."""
        async with self._writers:
            try:
                async with self._connection() as conn:
                    return await conn.fetchval(sql, msg.id, msg.token, *args, timeout=self.statement_timeout) is not None
            except TRANSIENT as exc:
                log.error("write for row %s failed (%s: %s); the row is redelivered after its lease expires",
                          msg.id, type(exc).__name__, exc)
                self._settled(msg, "error")
                return None

    def _lease_lost(self, msg: Message) -> None:
        self.metrics.add("lease_lost")
        log.warning("lease_lost: row %s of %r was reclaimed by another consumer before this write "
                    "(handler slower than lease_ttl_seconds=%s?)", msg.id, self.queue, self.lease_ttl_seconds)
        self._settled(msg, "lease_lost")

    def _settled(self, msg: Message, outcome: str) -> None:
        if self.on_settled is not None:
            self.on_settled(msg, outcome)

    # -- acking ----------------------------------------------------------------------
    async def _ack_loop(self) -> None:
        """Group commit: flush whatever has accumulated as soon as the previous flush is done, on one
        connection (and writer slot) kept for as long as acks keep coming."""
        outage = _OutageLog(f"ack on queue {self.queue!r}")
        while await self._ack_wait():
            batch, self._acks = self._acks, []
            try:
                async with self._writers, self._connection() as conn:
                    while batch:
                        rows = await conn.fetch(self.sql.ack, [m.id for m in batch], [m.token for m in batch],
                                                timeout=self.statement_timeout)
                        outage.ok()
                        flushed, batch = batch, []  # settled below, never again as unknown
                        self._acked(flushed, rows)
                        batch, self._acks = self._acks, []
            except Exception as exc:  # noqa: BLE001 - the acker must outlive any failure; the lease decides
                outage.failed(exc)
                if batch:
                    self._settle_unknown(batch)
                await asyncio.sleep(self.min_fetch_interval)

    async def _ack_wait(self) -> bool:
        """True once acks wait to be flushed; False when stopping and every handler is done."""
        while not self._acks:
            if self._stopping.is_set() and not self._busy:
                return False
            self._ack_ready.clear()
            await self._ack_ready.wait()
        return True

    def _acked(self, batch: list[Message], rows: list[asyncpg.Record]) -> None:
        """Settles an ack group by what the DELETE returned: a message whose row it did not delete with
        this message's token (reclaimed, or held twice in the group) has lost its lease."""
        done: dict[int, uuid.UUID] = dict(rows)  # id -> token: a row is deleted once, by one token
        self.metrics.add("acked", len(done))
        settled = self.on_settled
        if settled is None and len(done) == len(batch):  # every row deleted: the ids were distinct, all acked
            return
        for m in batch:
            if done.get(m.id) != m.token:
                self._lease_lost(m)
            elif settled is not None:
                settled(m, "acked")

    def _settle_unknown(self, batch: list[Message]) -> None:
        log.warning("%d acks on %r could not be written; those rows are redelivered after their lease expires",
                    len(batch), self.queue)
        for m in batch:
            self._settled(m, "error")

    async def _release(self, msgs: list[Message]) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self.sql.release, [m.id for m in msgs], [m.token for m in msgs],
                                   timeout=self.statement_timeout)
            for m in msgs:
                self._settled(m, "released")
        except Exception as exc:  # noqa: BLE001 - the lease hands them back anyway
            log.warning("could not hand back %d unstarted rows (%s); they are reclaimed after their lease",
                        len(msgs), exc)


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


def _being_cancelled() -> bool:
    """This task was asked to cancel (``Task.cancel()``), as opposed to the handler raising CancelledError."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
