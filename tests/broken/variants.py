"""Broken variants of the reference outbox, each exposed as an adapter object.

Every variant is the reference outbox with one realistic mistake, made by
subclassing (``Statements`` properties, ``Subscriber`` methods, ``Outbox``
methods), never by editing ``outbox/``. Each is plugged in through the stock
``ReferenceAdapter(outbox_factory=...)`` (``unlogged_table``, whose mistake is in
the schema, subclasses the adapter's ``create_schema``), so workers load it by
spec string, e.g. ``--impl tests.broken.variants:ack_before_handler``.

=========================  =================================================  ====================
variant                    mistake                                            caught by (guarantee)
=========================  =================================================  ====================
ack_before_handler         row deleted before the handler runs                sigkill_storm (D1, P2),
                                                                              max_connections (L3)
worker_clock_lease         lease cutoff from the worker's time.time()         clock_skew (D4, D3)
non_atomic_dead_letter     DELETE, then a separate INSERT into the DLQ        dlq_drift (R3, D1)
tokenless_ack              ack deletes by id, ignoring the lease token        slow_handlers (D6)
no_skip_locked             claim CTE without FOR UPDATE SKIP LOCKED           sigkill_storm (D3)
publish_outside_tx         publish commits on its own connection              sigkill_storm (P1)
grace_on_reclaim           reclaims graceful_timeout after the lease ran out  sigkill_storm (D5)
swapped_notify             pg_notify(payload, channel): NOTIFY wakes nobody   listen_loss (D7)
trusted_listen             slow safety poll while LISTEN is "up", and never   listen_loss (D8)
                           checks that connection
noisy_poll                 a WARNING about LISTEN on every poll while down    listen_loss (O2)
millisecond_retry          retry delay read as milliseconds                   poison_retries (R1)
attempts_cap               max_deliveries judged on failed attempts, not      poison_max_deliveries
                           on claims                                          (R2)
quiet_terminal             nacked_terminal counted only after the DLQ write   dlq_drift (R4)
connection_per_worker      a connection per worker task, beyond the budget    pool_exhaustion (L2)
fetch_through_drain        on SIGTERM, fetching goes on until the workers     graceful_drain (L1)
                           are idle or graceful_timeout passes
unlogged_table             the outbox table made UNLOGGED by a migration      pg_crash_restart with the
                                                                              workers paused (P2, D1)
exit_on_connection_error   the process exits on a broken connection instead   latency_resets (L4)
                           of reconnecting (its leases bring the rows back)
=========================  =================================================  ====================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from harness.adapters.reference import ReferenceAdapter
from outbox import Outbox
from outbox.sql import Statements
from outbox.listener import Listener
from outbox.subscriber import TRANSIENT, Message, Subscriber, _being_cancelled

log = logging.getLogger("tests.broken")


class BrokenOutbox(Outbox):
    """The reference Outbox with its ``Statements`` and ``Subscriber`` classes swappable."""

    statements_class: ClassVar[type[Statements]] = Statements
    subscriber_class: ClassVar[type[Subscriber]] = Subscriber

    def __init__(self, table: Any, dlq_table: Any = None, **kwargs: Any) -> None:
        super().__init__(table, dlq_table, **kwargs)
        self.statements = self.statements_class(self.statements.table, self.statements.dlq_table)

    def subscriber(self, engine: AsyncEngine, *, queue: str, handler: Any, **options: Any) -> Subscriber:
        return self.subscriber_class(engine, self.statements, queue=queue, handler=handler, **options)


def _outbox(name: str, *, statements: type[Statements] = Statements,
            subscriber: type[Subscriber] = Subscriber) -> type[BrokenOutbox]:
    return type(name, (BrokenOutbox,), {"statements_class": statements, "subscriber_class": subscriber})


def _swap(sql: str, old: str, new: str) -> str:
    """``sql`` with ``old`` replaced; loud if the reference SQL no longer contains ``old``."""
    if old not in sql:
        raise AssertionError(f"broken variant out of date: {old!r} not in the reference SQL")
    return sql.replace(old, new)


def _adapter(name: str, outbox_factory: type[Outbox]) -> ReferenceAdapter:
    adapter = ReferenceAdapter(outbox_factory=outbox_factory)
    adapter.name = f"broken:{name}"  # instance attribute: shows in results and logs
    return adapter


# -- ack before handler (D1) ---------------------------------------------------------------

class AckBeforeHandlerSubscriber(Subscriber):
    """Deletes the row (token-guarded, so it looks careful) *before* running the handler.

    A crash mid-handler then loses the message: the row is gone and nobody retries it.
    """

    async def _handle(self, msg: Message) -> None:
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(self.sql.ack, [msg.id], [msg.token], timeout=self.statement_timeout)
        except TRANSIENT:
            self._settled(msg, "error")  # the lease decides: redelivered after the TTL
            return
        if not rows:
            self._lease_lost(msg)
            return
        self.metrics.add("acked")
        try:
            await self.handler(msg)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - already acked: nothing left to retry
            log.exception("handler failed after the ack; row %s is gone", msg.id)
            self._settled(msg, "error")
            return
        self._settled(msg, "acked")


# -- lease cutoff from the worker's clock (D4, D3) -------------------------------------------

class WorkerClockLeaseStatements(Statements):
    """The fetch judges lease expiry by the worker's wall clock (``time.time()``), not ``now()``.

    A worker whose clock runs ahead by more than the TTL sees every live lease as expired
    and steals it. (Built per fetch: the property is read on every call of the fetch loop.)
    """

    @property
    def fetch(self) -> str:
        worker_now = time.time()  # faked by libfaketime in a skewed worker
        return _swap(
            super().fetch,
            "acquired_at < now() - make_interval(secs => $2)",
            f"acquired_at < to_timestamp({worker_now!r}) - make_interval(secs => $2)",
        )


# -- non-atomic dead-letter write (R3, D1) -----------------------------------------------------

class NonAtomicDeadLetterSubscriber(Subscriber):
    """Dead-letters in two autocommitted statements: DELETE ... RETURNING, then INSERT into the DLQ.

    When the INSERT fails (DLQ schema drift) the DELETE has already committed: the row is in
    neither table.
    """

    async def _terminal(self, msg: Message, reason: str, error: str, failed: int) -> None:
        if self.sql.dlq_table is None:
            await super()._terminal(msg, reason, error, failed)
            return
        self.metrics.add("nacked_terminal")
        try:
            async with self._writers, self._connection() as conn:
                row = await conn.fetchrow(
                    f"DELETE FROM {self.sql.table} WHERE id = $1 AND acquired_token = $2 "
                    f"RETURNING id, queue, payload, headers::text, created_at, attempts, deliveries",
                    msg.id, msg.token, timeout=self.statement_timeout)
                if row is None:
                    self._lease_lost(msg)
                    return
                await conn.execute(
                    f"INSERT INTO {self.sql.dlq_table} (original_id, queue, payload, headers, created_at, "
                    f"attempts, deliveries, reason, last_error) "
                    f"VALUES ($1, $2, $3, $4::text::jsonb, $5, $6 + $7, $8, $9, $10)",
                    row[0], row[1], row[2], row[3], row[4], row[5], failed, row[6], reason, error,
                    timeout=self.statement_timeout)
        except asyncpg.PostgresError as exc:
            log.error("dead-letter insert for row %s failed: %s: %s", msg.id, type(exc).__name__, exc)
            self._settled(msg, "error")
            return
        except TRANSIENT:
            self._settled(msg, "error")
            return
        self.metrics.add("dlq_written")
        self._settled(msg, "dead_lettered")


# -- ack that ignores the lease token (D6) -------------------------------------------------------

class TokenlessAckStatements(Statements):
    """The ack matches rows by id only: a stale ack deletes a row another worker now holds."""

    @property
    def ack(self) -> str:
        # ...and, like any implementation that never checks the token, reports the caller's token back.
        return _swap(super().ack, " AND o.acquired_token = a.token RETURNING o.id, o.acquired_token",
                     " RETURNING o.id, a.token")


# -- claim without FOR UPDATE SKIP LOCKED (D3) ----------------------------------------------------

class NoSkipLockedStatements(Statements):
    """The claim CTE reads candidates without locking them: two fetchers that start together both
    see a row as free, and the second UPDATE, after waiting for the first, claims it again."""

    @property
    def fetch(self) -> str:
        return _swap(super().fetch, " FOR UPDATE SKIP LOCKED", "")


# -- publish outside the caller's transaction (P1) -----------------------------------------------

class PublishOutsideTxOutbox(BrokenOutbox):
    """Publishes on a connection of its own that commits at once, so the caller's rollback
    cannot take the message back."""

    async def publish_batch(self, conn: Any, payloads: Sequence[Any], *, queue: str, **kwargs: Any) -> list[int]:
        if not isinstance(conn, AsyncConnection):
            raise TypeError("this broken variant only publishes through an SQLAlchemy AsyncConnection")
        async with conn.engine.begin() as own:
            return await super().publish_batch(own, payloads, queue=queue, **kwargs)


# -- reclaim waits a grace period past the lease (D5) ---------------------------------------------

class GraceOnReclaimSubscriber(Subscriber):
    """Reclaims a row only ``graceful_timeout`` after its lease ran out, "so a worker that is draining is not raced".

    The lease already is that protection: a dead holder's rows now come back ``graceful_timeout`` late. (The fetch
    judges expiry by ``self.lease_ttl_seconds``, its ``$2``; nothing else reads it but a log line.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_ttl_seconds += self.graceful_timeout


# -- NOTIFY with its arguments swapped (D7) ------------------------------------------------------------

class SwappedNotifyStatements(Statements):
    """The publish calls ``pg_notify(payload, channel)`` instead of ``pg_notify(channel, payload)``: the wake-up goes
    to a channel named after the queue, where nobody listens, so an idle consumer waits for its next poll."""

    @property
    def insert(self) -> str:
        return _swap(super().insert, "pg_notify($5, $1)", "pg_notify($1, $5)")


# -- an unchecked LISTEN connection and a slow safety poll (D8) -----------------------------------------

class DeafListener(Listener):
    """LISTENs once and then only holds the connection: no termination callback, no ping, no reconnect. When its
    backend is killed it goes on reporting ``connected``."""

    async def run(self) -> None:
        try:
            self._conn = await asyncpg.connect(**self._connect_kwargs)
            await self._conn.add_listener(self._channel, self._on_notify)
            self.connected = True
            self._wake()
            await asyncio.Event().wait()  # until cancelled by stop()
        finally:
            self.connected = False
            await self._close()


class TrustedListenSubscriber(Subscriber):
    """While its LISTEN connection is up, NOTIFY does the work and polling is only a safety net every
    ``SAFETY_POLL`` × ``max_fetch_interval``; and it takes "up" on trust (``DeafListener``). A LISTEN backend killed
    under it leaves it deaf and on the slow poll."""

    SAFETY_POLL = 3

    async def start(self) -> None:
        listen, self._listen = self._listen, False
        try:
            await super().start()
        finally:
            self._listen = listen
        if listen:
            self.listener = DeafListener(
                connect_kwargs=self._listen_kwargs(), channel=self.sql.channel, listen_sql=self.sql.listen,
                queue=self.queue, wake=self._wake.set, retry_interval=self.max_fetch_interval)
            self._listen_task = asyncio.create_task(self.listener.run(), name="outbox-listen")

    async def _sleep(self, seconds: float) -> None:
        if self.listener is not None and self.listener.connected:
            seconds *= self.SAFETY_POLL
        await super()._sleep(seconds)


# -- a WARNING on every poll while LISTEN is down (O2) ---------------------------------------------------

class NoisyPollSubscriber(Subscriber):
    """Says on every idle poll that LISTEN is down, at WARNING: one outage floods the log."""

    async def _sleep(self, seconds: float) -> None:
        if self.listener is not None and not self.listener.connected:
            log.warning("LISTEN connection on %s is down; polling %r every %.2fs", self.sql.channel, self.queue,
                        seconds)
        await super()._sleep(seconds)


# -- retry delays taken as milliseconds (R1) ------------------------------------------------------------

class MillisecondRetryStatements(Statements):
    """The retry statement reads the strategy's delay as milliseconds: a failed message is due again at once."""

    @property
    def retry(self) -> str:
        return _swap(super().retry, "make_interval(secs => $3)", "make_interval(secs => $3::float8 / 1000)")


# -- max_deliveries judged on failed attempts (R2) --------------------------------------------------------

class AttemptsCapSubscriber(Subscriber):
    """Caps on ``attempts`` (failed handler runs so far) instead of ``deliveries`` (claims): reclaims are not
    counted, and since a row's attempts lag its claims by one, every capped message gets one delivery too many."""

    async def _handle(self, msg: Message) -> None:
        if self.max_deliveries is not None and msg.attempts > self.max_deliveries:
            await self._terminal(msg, "max_deliveries",
                                 f"failed {msg.attempts} times, max_deliveries={self.max_deliveries}", 0)
            return
        try:
            await self.handler(msg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - as the reference: whatever the handler raises is a failure
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise
            try:
                await self._failed(msg, exc)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of row %s", msg.id)
                self._settled(msg, "error")
            return
        self._acks.append(msg)
        self._ack_ready.set()


# -- nacked_terminal counted only once the dead letter landed (R4) --------------------------------------

class QuietTerminalSubscriber(Subscriber):
    """Counts ``nacked_terminal`` together with ``dlq_written``, after the dead-letter write succeeded. While the
    DLQ refuses inserts neither moves, so the divergence an operator alerts on never shows."""

    async def _terminal(self, msg: Message, reason: str, error: str, failed: int) -> None:
        if self.sql.dlq_table is None:
            await super()._terminal(msg, reason, error, failed)
            return
        try:
            moved = await self._write(msg, self.sql.dead_letter, reason, error, failed)
        except asyncpg.PostgresError as exc:
            log.error("dead-letter write for row %s failed (%s: %s)", msg.id, type(exc).__name__, exc)
            self._settled(msg, "error")
            return
        if moved:
            self.metrics.add("nacked_terminal")
            self.metrics.add("dlq_written")
            self._settled(msg, "dead_lettered")
        elif moved is False:
            self._lease_lost(msg)


# -- a connection per worker, outside the declared budget (L2) -------------------------------------------

class ConnectionPerWorkerSubscriber(Subscriber):
    """Each worker task opens a connection of its own for its retry and dead-letter writes ("no pool checkout on
    the failure path"), beside the pool; the declared budget (``max_workers + 1`` pool connections and one LISTEN
    connection) still leaves them out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own: dict[asyncio.Task[Any], asyncpg.Connection] = {}

    async def _work_loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._own[me] = await asyncpg.connect(**self._listen_kwargs())
        try:
            await super()._work_loop()
        finally:
            conn = self._own.pop(me)
            conn.terminate()

    async def _write(self, msg: Message, sql: str, *args: Any) -> bool | None:
        conn = self._own.get(asyncio.current_task())  # type: ignore[arg-type]
        if conn is None:
            return await super()._write(msg, sql, *args)
        try:
            return await conn.fetchval(sql, msg.id, msg.token, *args, timeout=self.statement_timeout) is not None
        except TRANSIENT as exc:
            log.error("write for row %s failed (%s: %s)", msg.id, type(exc).__name__, exc)
            self._settled(msg, "error")
            return None


# -- fetching on through the drain (L1) -----------------------------------------------------------------

class FetchThroughDrainSubscriber(Subscriber):
    """On stop, lets the workers run until they are idle or ``graceful_timeout`` has passed, and only then stops
    fetching ("finish the backlog before going"). Under steady traffic the fetch loop goes on claiming new rows
    all through the drain; at the deadline whatever still runs is cancelled and comes back after its lease.

    It also claims one row at a time (``fetch_batch_size`` 1, a fair, low-latency setting that is no mistake), so
    its claims follow its handlers: with the scenario's batches of up to 50 prefetched rows, a drain that goes on
    may start only rows claimed before the signal, which is allowed, and then shows nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "fetch_batch_size": 1})

    async def stop(self) -> None:
        deadline = time.monotonic() + self.graceful_timeout
        while time.monotonic() < deadline and (self._busy or self._pending):
            await asyncio.sleep(0.02)
        self.graceful_timeout = max(0.01, deadline - time.monotonic())
        await super().stop()


# -- an UNLOGGED outbox table (P2) -----------------------------------------------------------------------

class UnloggedTableAdapter(ReferenceAdapter):
    """The reference outbox after a migration that made its table ``UNLOGGED`` to save WAL. Writes are faster; a
    crash-restart of PostgreSQL empties the table, every pending message with it."""

    async def create_schema(self, dsn: str, config: Any) -> None:
        await super().create_schema(dsn, config)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'ALTER TABLE "{self.outbox.statements.table}" SET UNLOGGED')
        finally:
            await conn.close()


# -- the adapters ----------------------------------------------------------------------------------

ack_before_handler = _adapter("ack_before_handler", _outbox("AckBeforeHandlerOutbox",
                                                            subscriber=AckBeforeHandlerSubscriber))
worker_clock_lease = _adapter("worker_clock_lease", _outbox("WorkerClockLeaseOutbox",
                                                            statements=WorkerClockLeaseStatements))
non_atomic_dead_letter = _adapter("non_atomic_dead_letter", _outbox("NonAtomicDeadLetterOutbox",
                                                                    subscriber=NonAtomicDeadLetterSubscriber))
tokenless_ack = _adapter("tokenless_ack", _outbox("TokenlessAckOutbox", statements=TokenlessAckStatements))
no_skip_locked = _adapter("no_skip_locked", _outbox("NoSkipLockedOutbox", statements=NoSkipLockedStatements))
publish_outside_tx = _adapter("publish_outside_tx", PublishOutsideTxOutbox)
grace_on_reclaim = _adapter("grace_on_reclaim", _outbox("GraceOnReclaimOutbox", subscriber=GraceOnReclaimSubscriber))
swapped_notify = _adapter("swapped_notify", _outbox("SwappedNotifyOutbox", statements=SwappedNotifyStatements))
trusted_listen = _adapter("trusted_listen", _outbox("TrustedListenOutbox", subscriber=TrustedListenSubscriber))
noisy_poll = _adapter("noisy_poll", _outbox("NoisyPollOutbox", subscriber=NoisyPollSubscriber))
millisecond_retry = _adapter("millisecond_retry", _outbox("MillisecondRetryOutbox",
                                                          statements=MillisecondRetryStatements))
attempts_cap = _adapter("attempts_cap", _outbox("AttemptsCapOutbox", subscriber=AttemptsCapSubscriber))
quiet_terminal = _adapter("quiet_terminal", _outbox("QuietTerminalOutbox", subscriber=QuietTerminalSubscriber))
connection_per_worker = _adapter("connection_per_worker", _outbox("ConnectionPerWorkerOutbox",
                                                                  subscriber=ConnectionPerWorkerSubscriber))
fetch_through_drain = _adapter("fetch_through_drain", _outbox("FetchThroughDrainOutbox",
                                                              subscriber=FetchThroughDrainSubscriber))
class ExitOnConnectionErrorSubscriber(Subscriber):
    """Gives up on the first broken connection: the process exits with status 1 instead of reconnecting, as a
    consumer does whose failed write escapes as an unhandled error. Its leases bring its rows back and the
    supervisor starts it again, so nothing is lost: only L4 can tell."""

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with super()._connection() as conn:
                yield conn
        except TRANSIENT as exc:
            log.critical("connection lost (%s: %s); exiting", type(exc).__name__, exc)
            os._exit(1)


unlogged_table = UnloggedTableAdapter()
unlogged_table.name = "broken:unlogged_table"  # instance attribute, as _adapter does
exit_on_connection_error = _adapter("exit_on_connection_error", _outbox("ExitOnConnectionErrorOutbox",
                                                                        subscriber=ExitOnConnectionErrorSubscriber))

VARIANTS = ("ack_before_handler", "worker_clock_lease", "non_atomic_dead_letter", "tokenless_ack",
            "no_skip_locked", "publish_outside_tx", "grace_on_reclaim", "swapped_notify", "trusted_listen",
            "noisy_poll", "millisecond_retry", "attempts_cap", "quiet_terminal", "connection_per_worker",
            "fetch_through_drain", "unlogged_table", "exit_on_connection_error")
