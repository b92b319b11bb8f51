"""What a lease consumer does whatever its design: the claim loop (polling, back-off, reconnects), what
happens after the handler (complete, retry, dead-letter, each guarded by the lease token and reported),
handing rows back, and the adapter around a consumer class. A design decides only how much it can take
(``room``) and what it does with claimed rows (``accept``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from harness.adapter import Capabilities, ConsumerConfig, ConsumerContext, DeliveryInfo, OutboxState, PublishTx
from tests.correct._lease import CONNECTION_ERRORS, LeaseTable, Link, Outage, pause, retry_delay, terminal_reason


@dataclass(slots=True)
class Claimed:
    """One claimed row, as the consumer holds it."""

    id: int
    payload: bytes
    token: uuid.UUID
    deliveries: int  # claims so far, this one included
    attempts: int  # failed handler runs so far
    expires: float  # time.monotonic() by which the lease has surely run out (taken before the claim was sent)

    @classmethod
    def from_record(cls, record: Sequence[object], expires: float) -> Claimed:
        rid, payload, token, deliveries, attempts = record
        return cls(int(rid), bytes(payload), token, int(deliveries), int(attempts), expires)  # type: ignore[arg-type]


RowHandler = Callable[[Claimed], Awaitable[None]]
Settled = Callable[[Claimed, str], None]


class LeaseConsumer:
    """Settling and hand-back for one consumer process; subclasses decide how rows are claimed and run."""

    log: ClassVar[logging.Logger] = logging.getLogger("tests.correct")

    def __init__(self, dsn: str, table: LeaseTable, config: ConsumerConfig, *, application_name: str,
                 handler: RowHandler, settled: Settled,
                 claimed: Callable[[Sequence[bytes]], None] = lambda payloads: None) -> None:
        self.dsn = dsn
        self.table = table
        self.config = config
        self.application_name = application_name
        self.handler = handler
        self.settled = settled
        self.claimed = claimed  # told of every claim as soon as it returns
        self.stopping = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task whose death by an exception is logged at once, not found at shutdown."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report_death)
        return task

    def _report_death(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s died", task.get_name(), exc_info=task.exception())

    def link(self) -> Link:
        return Link(self.dsn, self.application_name, self.config.statement_timeout_seconds)

    async def run(self, stopping: asyncio.Event) -> None:
        raise NotImplementedError

    # -- what a design decides ----------------------------------------------------------------------
    def room(self) -> int:
        """How many more rows the consumer can take right now."""
        raise NotImplementedError

    def accept(self, rows: list[Claimed]) -> None:
        """Takes freshly claimed rows (at most ``room()``); must not block."""
        raise NotImplementedError

    # -- claiming -----------------------------------------------------------------------------------
    async def claim_loop(self, link: Link, room_freed: asyncio.Event) -> None:
        """Claims while there is room, until ``self.stopping``. After a full batch it claims again at once,
        otherwise it waits ``min_fetch_interval``, doubling up to ``max_fetch_interval`` while idle. Errors
        go to ``recover``; the loop itself never dies of one."""
        cfg = self.config
        outage = Outage(self.log, f"claim on queue {cfg.queue!r}")
        idle = cfg.min_fetch_interval
        while not self.stopping.is_set():
            room = self.room()
            if room <= 0:
                room_freed.clear()
                await pause(self.stopping, cfg.max_fetch_interval, room_freed)
                continue
            limit = min(room, cfg.fetch_batch_size)
            try:
                rows = await self.claim(link, limit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not self.recover(exc, outage):
                    return
                await pause(self.stopping, outage.backoff())
                continue
            outage.ok()
            if self.stopping.is_set():  # stopped while claiming: these never reach a handler
                await self.release(rows, link)
                return
            self.accept(rows)
            if len(rows) == limit:
                idle = cfg.min_fetch_interval
                continue
            await pause(self.stopping, cfg.min_fetch_interval if rows else idle)
            idle = cfg.min_fetch_interval if rows else min(idle * 2, cfg.max_fetch_interval)

    async def end_claiming(self, claimer: asyncio.Task[None], deadline: float) -> None:
        """Waits for the claim loop to notice the stop (a claim in flight may still hand its rows back),
        for at most half the time left before ``deadline``; then cancels it, leaving those rows to their
        leases."""
        await asyncio.wait({claimer}, timeout=max(0.05, (deadline - time.monotonic()) / 2))
        if not claimer.done():
            claimer.cancel()
            await asyncio.gather(claimer, return_exceptions=True)

    def recover(self, exc: Exception, outage: Outage) -> bool:
        """After a failed claim: log it (once per outage) and keep going; True means try again."""
        outage.failed(exc)
        return True

    async def claim(self, link: Link, limit: int) -> list[Claimed]:
        """Claims up to ``limit`` rows; rows already past ``max_deliveries`` go terminal unhandled."""
        expires = time.monotonic() + self.config.lease_ttl_seconds
        records = await link.fetch(self.table.claim, self.config.queue, limit, self.config.lease_ttl_seconds)
        rows = sorted((Claimed.from_record(r, expires) for r in records), key=lambda c: c.id)
        if rows:
            self.claimed([r.payload for r in rows])
        cap = self.config.max_deliveries
        over = [r for r in rows if cap is not None and r.deliveries > cap]
        for row in over:  # reclaimed after crashes until the cap: no handler call, straight to terminal
            await self._terminal_unhandled(row, link)
        return [r for r in rows if cap is None or r.deliveries <= cap]

    async def release(self, rows: Sequence[Claimed], link: Link) -> None:
        """Hands back rows no handler has seen (token-guarded: a row someone else holds is left alone)."""
        if not rows:
            return
        try:
            await link.fetch(self.table.release, [r.id for r in rows], [r.token for r in rows])
        except Exception as exc:  # noqa: BLE001 - their leases run out on their own
            self.log.warning("handing back %d rows failed (%s: %s); they come back when their leases expire",
                             len(rows), type(exc).__name__, exc)

    async def deliver(self, row: Claimed, link: Link) -> None:
        """Runs the handler and settles the row. Never raises but for cancellation."""
        try:
            await self.handler(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed handler is a retry or a dead letter
            await self._failed(row, exc, link)
            return
        await self._write(row, link, "acked", self.table.complete, row.id, row.token)

    async def _failed(self, row: Claimed, exc: Exception, link: Link) -> None:
        failures = row.attempts + 1
        reason = terminal_reason(self.config, failures, row.deliveries)
        if reason is None:
            delay = retry_delay(self.config, failures)
            await self._write(row, link, "retry", self.table.retry, row.id, row.token, delay)
        elif self.config.dlq:
            error = f"{type(exc).__name__}: {exc}"[:500]
            await self._write(row, link, "dead_lettered", self.table.dead_letter, row.id, row.token, reason, error)
        else:
            await self._write(row, link, "dropped", self.table.drop, row.id, row.token)

    async def _write(self, row: Claimed, link: Link, outcome: str, sql: str, *args: object) -> None:
        """One token-guarded write; no row matched means the lease was lost. A failed write leaves the row
        leased, so it comes back after the lease: reported as ``error``."""
        try:
            matched = await link.fetch(sql, *args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            level = logging.WARNING if isinstance(exc, CONNECTION_ERRORS) else logging.ERROR
            self.log.log(level, "%s write for row %s failed: %s: %s; it is redelivered after its lease",
                         outcome, row.id, type(exc).__name__, exc)
            self.settled(row, "error")
            return
        self.settled(row, outcome if matched else "lease_lost")

    async def _terminal_unhandled(self, row: Claimed, link: Link) -> None:
        sql = self.table.dead_letter if self.config.dlq else self.table.drop
        args = ("max_deliveries", f"claimed {row.deliveries} times") if self.config.dlq else ()
        try:
            await link.fetch(sql, row.id, row.token, *args)
        except Exception as exc:  # noqa: BLE001 - still leased: tried again after the lease
            self.log.warning("terminal write for row %s failed: %s: %s", row.id, type(exc).__name__, exc)


class ConsumerFactory(Protocol):
    def __call__(self, dsn: str, table: LeaseTable, config: ConsumerConfig, *, application_name: str,
                 handler: RowHandler, settled: Settled, claimed: Callable[[Sequence[bytes]], None] = ...
                 ) -> LeaseConsumer: ...


class LeaseAdapter:
    """The adapter contract around a ``LeaseConsumer`` subclass and its table."""

    name: str
    capabilities: Capabilities
    consumer_class: ClassVar[ConsumerFactory]
    table: ClassVar[LeaseTable]
    reports_claims: ClassVar[bool] = True  # tell the harness of each claim (ctx.claimed)

    @property
    def dlq_table(self) -> str:
        return self.table.dlq

    def connection_budget(self, config: ConsumerConfig) -> int:
        raise NotImplementedError

    async def create_schema(self, dsn: str, config: ConsumerConfig) -> None:
        await self.table.create(dsn)

    async def publish(self, tx: PublishTx, payloads: Sequence[bytes], queue: str) -> None:
        await self.table.publish(tx, payloads, queue)

    async def read_state(self, dsn: str) -> OutboxState:
        return await self.table.read_state(dsn)

    async def consume(self, ctx: ConsumerContext) -> None:
        cfg = ctx.config
        budget = self.connection_budget(cfg)
        if cfg.pool_size is not None and cfg.pool_size < budget:
            raise ValueError(f"pool_size={cfg.pool_size} is below this consumer's connection budget of {budget}"
                             f" backends; raise pool_size to at least {budget} or lower max_workers")

        def info(row: Claimed) -> DeliveryInfo:
            return DeliveryInfo(lease_at=None, delivery=row.deliveries, key=str(row.id))

        async def handle(row: Claimed) -> None:
            await ctx.handler(row.payload, info(row))

        consumer = self.consumer_class(ctx.dsn, self.table, cfg, application_name=ctx.application_name,
                                       handler=handle,
                                       settled=lambda row, outcome: ctx.settled(row.payload, outcome, info(row)),
                                       **({"claimed": ctx.claimed} if self.reports_claims else {}))
        await consumer.run(ctx.stopping)
